"""docs/bringing_your_model.md's Python examples run as written, in order, as one script."""

import re
from pathlib import Path

import jax
import numpy as np
import pytest

from fedjax_compress import models

PAGE = Path(__file__).resolve().parents[2] / "docs" / "bringing_your_model.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def test_the_page_covers_linen_nnx_training_and_registration():
  text = "\n".join(BLOCKS)
  for needle in (
    "nn.Dropout",
    "nn.BatchNorm",
    "nnx.Dropout",
    "nnx.BatchNorm",
    "from_flax",
    "learning.fed_avg",
    "register_model",
    "model_registry.create",
  ):
    assert needle in text, needle
  assert "--config.model.name=my_model" in PAGE.read_text()
  assert "--config.imports=my_module" in PAGE.read_text()


@pytest.mark.slow
def test_the_pages_python_blocks_run_in_order():
  namespace = {}
  try:
    for index, block in enumerate(BLOCKS):
      exec(compile(block, f"docs/bringing_your_model.md python block {index}", "exec"), namespace)
    # Dropout: training applies differ, evaluation ones do not.
    assert not np.allclose(namespace["train_a"], namespace["train_b"])
    np.testing.assert_array_equal(namespace["eval_a"], namespace["eval_b"])
    # A fed_avg round moved BatchNorm's statistics, Linen's and NNX's.
    assert set(namespace["trained"]) == {"linen", "nnx"}
    for before, after in namespace["trained"].values():
      assert jax.tree.structure(before) == jax.tree.structure(after)
      assert len(jax.tree.leaves(before)) == 2  # mean and var
      for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
        assert not np.allclose(a, b)
    assert namespace["metrics"]["round_aggregated_bits"] > namespace["metrics"]["round_update_bits"]
    assert namespace["wide"].input_shape == namespace["INPUT_SHAPE"]
    assert "my_model" in models.model_names()
  finally:
    models.model_registry._factories.pop("my_model", None)  # pylint: disable=protected-access
