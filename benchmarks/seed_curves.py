"""A metric over rounds across seeds, for runs made with experiments.main (not a sweep).

  python -m benchmarks.seed_curves --run=fedavg=DIR0,DIR1,DIR2 --run=fedadam=DIR0,DIR1,DIR2 \
      [--rounds=50,100,150,200,250,300] [--metric=eval/accuracy] [--json=PATH] [--png=PREFIX]

Prints, per run name and round, the mean ± sample standard deviation across the seeds'
workdirs and the 95% interval of the mean (`experiments.plot.seed_stats`); `--json`
writes every seed's value and the statistics, `--png` the curves with their bands
(`experiments.plot.draw_rounds`: PREFIX.png and PREFIX.svg). The README's Shakespeare
table (FedAvg and FedAdam, seeds 0-2) is this script's output.
"""

from __future__ import annotations

import json
from typing import Any

from absl import app, flags

from benchmarks import cli
from experiments import plot

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "NAME=WORKDIR,WORKDIR,...: one run per seed.")
flags.DEFINE_list("rounds", None, "Rounds to tabulate (default: every evaluated round).")
flags.DEFINE_string("metric", "eval/accuracy", "The metric over rounds.")
flags.DEFINE_string("json", None, "Write the values and statistics here.")
flags.DEFINE_string("png", None, "Draw the curves as PREFIX.png and PREFIX.svg.")


def parse_run(text: str) -> tuple[str, list[str]]:
  """'NAME=DIR,DIR' -> (NAME, [DIR, DIR]); SystemExit with one error line otherwise."""
  name, _, dirs = text.partition("=")
  workdirs = [d for d in dirs.split(",") if d]
  if not name or not workdirs:
    raise SystemExit(f"error: --run={text!r}: give NAME=WORKDIR,WORKDIR,... (one per seed).")
  return name, workdirs


def seed_table(variants: list[plot.SweepVariant], metric: str, rounds: list[int] | None):
  """Per variant and round: every seed's value and their `plot.Stats`."""
  table: dict[str, dict[int, dict[str, Any]]] = {}
  for v in variants:
    per_seed = [{r["round"]: r[metric] for r in run if metric in r} for run in v.runs]
    common = sorted(set.intersection(*(set(s) for s in per_seed)))
    wanted = common if rounds is None else rounds
    missing = [r for r in wanted if r not in common]
    if missing:
      raise SystemExit(
        f"error: {v.name}: no {metric} at round(s) {missing} in every seed's "
        f"run; evaluated in all: {common}."
      )
    table[v.name] = {
      r: {"values": [s[r] for s in per_seed], **plot.seed_stats([s[r] for s in per_seed])._asdict()}
      for r in wanted
    }
  return table


def main(argv):
  del argv
  if not FLAGS.run:
    raise SystemExit("error: give at least one --run=NAME=WORKDIR,WORKDIR,...")
  cli.check_json_path(FLAGS.json)
  cli.check_json_path(FLAGS.png, "png")
  runs = [parse_run(t) for t in FLAGS.run]
  try:
    rounds = None if FLAGS.rounds is None else [int(r) for r in FLAGS.rounds]
  except ValueError:
    raise SystemExit(f"error: --rounds={','.join(FLAGS.rounds)}: give integers.") from None
  try:
    variants = [
      plot.SweepVariant(name, list(range(len(dirs))), [plot.read_metrics(d) for d in dirs], 0, 0)
      for name, dirs in runs
    ]
  except plot.PlotError as e:
    raise SystemExit(f"error: {e}") from None
  table = seed_table(variants, FLAGS.metric, rounds)
  for name, per_round in table.items():
    for r, s in per_round.items():
      spread = (
        ""
        if s["std"] is None
        else (f" ± {s['std']:.4f} (95% CI {s['ci_low']:.4f}-{s['ci_high']:.4f})")
      )
      print(f"{name:12s} round {r:5d}  {FLAGS.metric} {s['mean']:.4f}{spread}  n={s['n']}")
  if FLAGS.json:
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump({"metric": FLAGS.metric, "runs": dict(runs), "table": table}, f, indent=1)
  if FLAGS.png:
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    fig = Figure(figsize=(6.5, 4), layout="constrained")
    plot.draw_rounds(fig.subplots(), variants, FLAGS.metric, "ci95")
    print(plot.save(fig, FLAGS.png))


if __name__ == "__main__":
  app.run(main)
