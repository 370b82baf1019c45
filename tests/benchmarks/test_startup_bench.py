"""benchmarks.startup on a stand-in checkout whose experiments.main prints a round line."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MAIN = """
import sys, time
if "--help" in sys.argv:
  print("usage"); sys.exit(1)
time.sleep(0.2)
print("loading data")
print("round     1/1  loss 1.0000  acc 0.5000", flush=True)
time.sleep(0.3)
"""


def fake_repo(root):
  for path, text in {
    "experiments/__init__.py": "",
    "experiments/train.py": "",
    "experiments/main.py": MAIN,
    "fedjax_compress/__init__.py": "",
    "configs/default.py": "",
  }.items():
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
  return root


def bench(*args):
  return subprocess.run(
    [sys.executable, "-m", "benchmarks.startup", *args],
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_times_a_checkout_and_writes_json(tmp_path):
  repo = fake_repo(tmp_path / "repo")
  before = sorted(p for p in repo.rglob("*") if "__pycache__" not in p.parts)
  result = bench(
    f"--repo={repo}",
    f"--python={sys.executable}",
    "--repeats=2",
    "--warmup=0",
    f"--json={tmp_path / 'out.json'}",
  )
  assert result.returncode == 0, result.stderr
  record = json.loads((tmp_path / "out.json").read_text())
  summary = record["summary"]
  assert set(summary) == {"help", "import", "first_round", "first_round_total"}
  assert 0.2 < summary["first_round"]["median_s"] < summary["first_round_total"]["median_s"]
  assert summary["first_round_total"]["min_s"] >= 0.5
  assert len(record["runs"]) == 8 and record["help_imports_tensorflow"] is False
  assert record["runs"][2]["first_line"].startswith("round     1/1")
  assert all(r["cpu_seconds"] is not None and r["cpu_seconds"] >= 0 for r in record["runs"])
  assert "first_round" in result.stdout and "median s" in result.stdout
  # The temp workdirs went elsewhere.
  assert sorted(p for p in repo.rglob("*") if "__pycache__" not in p.parts) == before


def test_bad_invocations_are_one_error_line(tmp_path):
  repo = fake_repo(tmp_path / "repo")
  (repo / "experiments" / "main.py").write_text("import sys; sys.exit('boom')\n")
  for args, words in [
    ([f"--json={tmp_path / 'no' / 'x.json'}"], "folder does not exist"),
    ([f"--repo={repo}", f"--python={sys.executable}", "--warmup=0", "--repeats=1"], "boom"),
  ]:
    result = bench(*args)
    lines = result.stderr.splitlines()
    assert result.returncode != 0 and len(lines) == 1, (args, result.stderr)
    assert lines[0].startswith("error: ") and words in lines[0], (args, lines)
    assert "Traceback" not in result.stdout + result.stderr
