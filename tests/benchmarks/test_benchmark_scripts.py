"""What every script in benchmarks/ keeps to, read from its source (nothing is run):
files are written only where a flag says, and only public names are used."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))
# Flags that name a file or folder the script writes.
OUTPUT_FLAGS = {"json", "png", "figure", "plot", "out", "workdir"}


def flag_defaults(tree: ast.Module) -> dict[str, ast.expr]:
  """name -> default of every `flags.DEFINE_*(name, default, ...)` call."""
  defaults = {}
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Call)
      and isinstance(node.func, ast.Attribute)
      and node.func.attr.startswith("DEFINE_")
      and len(node.args) >= 2
      and isinstance(node.args[0], ast.Constant)
    ):
      defaults[node.args[0].value] = node.args[1]
  return defaults


def test_the_scripts_are_found():
  assert {"round_speed.py", "dme.py", "fold_cost.py", "behaviour.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_outputs_go_only_where_a_flag_says(path):
  defaults = flag_defaults(ast.parse(path.read_text()))
  for name in OUTPUT_FLAGS & set(defaults):
    default = defaults[name]
    assert isinstance(default, ast.Constant) and default.value is None, (
      f"{path.name}: --{name} has a default; outputs go only where the command says"
    )


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_only_public_names_are_used(path):
  tree = ast.parse(path.read_text())
  modules = set()  # names bound to imported modules or packages
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.ImportFrom)
      and node.module
      and node.module.split(".")[0] in ("fedjax_compress", "benchmarks", "experiments")
    ):
      private = [a.name for a in node.names if a.name.startswith("_")]
      assert not private, f"{path.name}: imports private {private} from {node.module}"
      assert not any(part.startswith("_") for part in node.module.split(".")), node.module
      modules.update(a.asname or a.name for a in node.names)
    elif isinstance(node, ast.Import):
      modules.update((a.asname or a.name).split(".")[0] for a in node.names)
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute)
      and isinstance(node.value, ast.Name)
      and node.value.id in modules
      and node.attr.startswith("_")
      and not node.attr.startswith("__")
    ):
      pytest.fail(f"{path.name}:{node.lineno}: uses private {node.value.id}.{node.attr}")


def test_no_benchmark_lives_in_tests():
  assert not sorted(p.name for p in (REPO / "tests").rglob("bench_*.py"))
