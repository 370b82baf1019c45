"""docs/api.md's Python examples run as written, in order, as one script."""

import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCKS = re.findall(r"```python\n(.*?)```", API.read_text(), re.S)


def test_api_docs_have_examples_for_every_layer():
  assert len(BLOCKS) >= 5
  text = "\n".join(BLOCKS)
  for needle in (
    "load_federated",
    "models.create_model",
    "agg.encoded_mean",
    "learning.fed_avg",
    "train.train_and_evaluate",
    "plot.plot_workdirs",
  ):
    assert needle in text, needle


@pytest.mark.slow
def test_api_docs_python_blocks_run_in_order():
  namespace = {}
  for index, block in enumerate(BLOCKS):
    exec(compile(block, f"docs/api.md python block {index}", "exec"), namespace)
  assert namespace["metrics"]["round_aggregated_bits"] > 0
  assert namespace["metrics"]["round_update_bits"] < 32 * 199_210 * 5  # 2-bit codes
  assert all(Path(p).stat().st_size > 0 for p in namespace["paths"])
