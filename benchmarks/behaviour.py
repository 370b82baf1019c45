"""Behaviour that must not move: runs the default and seed configs and compares each
`metrics.jsonl` with the one stored before a change (timing fields aside).

  python -m benchmarks.behaviour [--runs=default,fedavg,comp,comp_tff] [--json=PATH]
      [--leaf_dir=../shared/data/femnist_leaf_niid05]

`benchmarks/reference/NAME.jsonl` were written by commit 163689d (before configs had
components) with the commands in `RUNS`, in their flat-config form; the seed runs read
the real FEMNIST digits, so they are skipped, and said so, where that folder is absent.
Bitwise equality holds on one machine kind and backend: XLA may round differently on
another CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "benchmarks" / "reference"
TIMING = ("round_seconds", "compiles")
LEAF = "--config.data.name=leaf"
RUNS = {
  "default": ["--config=configs/default.py"],
  "fedavg": ["--config=configs/emnist_fedavg.py", LEAF, "--config.rounds=3"],
  "comp": ["--config=configs/emnist_compression.py", LEAF, "--config.rounds=3"],
  "comp_tff": [
    "--config=configs/emnist_compression.py",
    LEAF,
    "--config.rounds=2",
    "--config.bit_accounting=tff",
  ],
}

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", list(RUNS), f"Runs to compare: {list(RUNS)}.")
flags.DEFINE_string(
  "leaf_dir",
  str(REPO.parent / "shared" / "data" / "femnist_leaf_niid05"),
  "LEAF FEMNIST folder for the seed runs.",
)
flags.DEFINE_string("json", None, "Write the comparison here.")


def records(path: Path) -> list[dict]:
  """A metrics.jsonl without its timing fields."""
  return [
    {k: v for k, v in json.loads(line).items() if k not in TIMING}
    for line in path.read_text().splitlines()
  ]


def first_difference(before: list[dict], after: list[dict]) -> str:
  """'' if equal, else where the two runs first differ."""
  if len(before) != len(after):
    return f"{len(before)} rounds before, {len(after)} after"
  for a, b in zip(before, after):
    if a != b:
      keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
      return f"round {a.get('round')}: {', '.join(keys[:4])}"
  return ""


def compare(name: str, workdir: Path) -> dict:
  """Runs `name` into `workdir` and compares it with its reference."""
  arguments = list(RUNS[name])
  if LEAF in arguments:
    if not Path(FLAGS.leaf_dir).is_dir():
      return {"run": name, "result": f"skipped: no LEAF data at {FLAGS.leaf_dir}"}
    arguments.append(f"--config.data.data_dir={FLAGS.leaf_dir}")
  done = subprocess.run(
    [sys.executable, "-m", "experiments.main", f"--workdir={workdir}", *arguments],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  if done.returncode:
    return {"run": name, "result": f"failed: {done.stderr.strip()[-300:]}"}
  difference = first_difference(
    records(REFERENCE / f"{name}.jsonl"), records(workdir / "metrics.jsonl")
  )
  return {"run": name, "result": f"different: {difference}" if difference else "identical"}


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.runs) - set(RUNS))
  if unknown:
    raise SystemExit(f"error: --runs: {unknown} unknown; valid: {list(RUNS)}.")
  if FLAGS.json and not Path(FLAGS.json).resolve().parent.is_dir():
    raise SystemExit(f"error: --json={FLAGS.json}: its folder does not exist; create it first.")
  with tempfile.TemporaryDirectory() as tmp:
    rows = [compare(name, Path(tmp) / name) for name in FLAGS.runs]
  print("| run | against the reference |\n|---|---|")
  for row in rows:
    print(f"| {row['run']} | {row['result']} |")
  if FLAGS.json:
    Path(FLAGS.json).write_text(json.dumps(rows, indent=2))
  if any(not row["result"].startswith(("identical", "skipped")) for row in rows):
    sys.exit(1)


if __name__ == "__main__":
  from experiments import cli  # pylint: disable=import-outside-toplevel

  app.run(main, flags_parser=cli.flags_parser([]))
