"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
  assert BLOCKS


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
  namespace = {}
  exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
  if "metrics" in namespace:
    assert namespace["metrics"]["round_aggregated_bits"] > 0


def test_every_public_function_and_class_has_a_docstring():
  import ast

  package = README.parent / "fedjax_compress"
  missing = []
  for path in sorted(package.rglob("*.py")):
    for node in ast.parse(path.read_text()).body:
      # A typing.overload stub only states a signature: the implementation holds the docstring.
      overload = any(
        (d.id if isinstance(d, ast.Name) else getattr(d, "attr", "")) == "overload"
        for d in getattr(node, "decorator_list", ())
      )
      if (
        isinstance(node, (ast.FunctionDef, ast.ClassDef))
        and not node.name.startswith("_")
        and not overload
        and not ast.get_docstring(node)
      ):
        missing.append(f"{path.relative_to(README.parent)}:{node.lineno} {node.name}")
  assert not missing, "public names without a docstring:\n" + "\n".join(missing)
