"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
  assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
  namespace = {}
  exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
  if "metrics" in namespace:
    assert namespace["metrics"]["round_aggregated_bits"] > 0
