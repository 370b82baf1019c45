"""FEMNIST test accuracy against epsilon: central Gaussian, DDG and Skellam, several seeds.

  python -m benchmarks.privacy_accuracy --workdir=/tmp/privacy_runs \
      --json=benchmarks/privacy_accuracy.json --figure=docs/privacy_accuracy.png

Each variant is a full training run (`experiments.train.train_and_evaluate`) of the
FedAvg 2NN (`mlp`, 199,210 parameters, padded to 2^18 for the rotation) on LEAF FEMNIST
digits (104 writers; `--data_dir`), 10 clients a round sampled without replacement,
5 local epochs of batch 10 at client SGD 0.02 (the writers hold about 100 examples each:
one epoch of batch 20 is 5 steps, too few for the 2NN to move in 50 rounds; LEAF's
images have a white background, and at SGD 0.1 the 2NN did not learn),
unweighted (DP), clip `--clip_norm`, noise calibrated to each target epsilon at delta
1e-5 over the run's rounds (dp-accounting, RDP, replace-one; `privacy.plan`). Runs live
in `--workdir/<variant>/seed<k>`; a finished run is read back rather than run again, so
an interrupted study resumes. The figure and JSON are written only where told.

Why the 2NN and not the CNN: each distributed-DP client samples noise for every
coordinate, and the discrete samplers cost about 0.7 s per client for the CNN's 2^21
coordinates on this CPU (0.09 s for 2^18); Skellam's cost also grows with its mean,
which grows 4x per bit (so Skellam runs at 12 bits only here; see
benchmarks/RESULTS.md "Private mean estimation" for wider widths).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags

from benchmarks import cli
from experiments import workdir as workdir_lib
from experiments.build import ConfigError
from fedjax_compress.data import DataError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder of the runs (one subfolder per variant and seed).")
flags.DEFINE_string("json", None, "Write the summary here.")
flags.DEFINE_string("figure", None, "Draw accuracy against epsilon here (.png or .pdf).")
flags.DEFINE_string(
  "data_dir", None, "LEAF FEMNIST folder; default ../shared/data/femnist_leaf_niid05."
)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every variant.")
flags.DEFINE_integer("rounds", 50, "Rounds of every run.")
flags.DEFINE_float("clip_norm", 0.3, "L2 clip of each client's update.")
flags.DEFINE_list("variants", None, "Run only these variant names (default: all).")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "femnist_leaf_niid05"
EPSILONS = (15.0, 100.0, 1000.0)
# (name, aggregator component, target epsilon or None) of every variant.
VARIANTS: list[tuple[str, str, float | None]] = [("float32", "mean(weighted=False)", None)]
for _eps in EPSILONS:
  VARIANTS.append((f"gaussian_eps{_eps:g}", f"dp(target_epsilon={_eps})", _eps))
  for _mechanism, _bits in (("ddg", 12), ("ddg", 16), ("skellam", 12)):
    VARIANTS.append(
      (
        f"{_mechanism}{_bits}_eps{_eps:g}",
        f"{_mechanism}(bits={_bits}, target_epsilon={_eps})",
        _eps,
      )
    )


def config_for(aggregator: str, seed: int):
  """The study's config for one variant and seed."""
  from experiments import overrides  # pylint: disable=import-outside-toplevel

  settings = [
    ("data", "leaf(only_digits=True)"),
    ("data.data_dir", FLAGS.data_dir or str(DEFAULT_DATA)),
    ("model", "mlp"),
    ("rounds", str(FLAGS.rounds)),
    ("clients_per_round", "10"),
    ("batch_size", "10"),
    ("epochs", "5"),
    ("client_optimizer", "sgd(learning_rate=0.02)"),
    ("server_optimizer", "sgd(learning_rate=1.0)"),
    ("client_weighting", "uniform"),
    ("aggregator", aggregator),
    ("eval_every", str(FLAGS.rounds)),
    ("log_every", str(FLAGS.rounds)),
    ("checkpoint_every", "0"),
    ("seed", str(seed)),
  ]
  config = overrides.load("configs/default.py", [])
  for key, value in settings:
    overrides.apply(config, key, value)
  if aggregator.startswith(("dp", "ddg", "skellam")):
    overrides.apply(config, "aggregator.clip_norm", str(FLAGS.clip_norm))
  return config


def run_one(name: str, aggregator: str, seed: int) -> dict:
  """The final record of one run (run now, or read back when finished)."""
  from experiments import train  # pylint: disable=import-outside-toplevel

  workdir = os.path.join(FLAGS.workdir, name, f"seed{seed}")
  records, _ = workdir_lib.complete_records(Path(workdir) / workdir_lib.METRICS_FILE)
  if records and records[-1]["round"] == FLAGS.rounds:
    return records[-1]
  os.makedirs(workdir, exist_ok=True)
  return train.train_and_evaluate(config_for(aggregator, seed), workdir)[-1]


def summary(values: list[float]) -> dict:
  arr = np.asarray(values, np.float64)
  std = float(arr.std(ddof=1)) if len(arr) > 1 else None
  return {"mean": float(arr.mean()), "std": std, "n": len(arr), "values": values}


def run() -> list[dict]:
  chosen = [v for v in VARIANTS if not FLAGS.variants or v[0] in FLAGS.variants]
  rows: list[dict[str, Any]] = []
  for name, aggregator, target in chosen:
    try:
      finals = [run_one(name, aggregator, int(s)) for s in FLAGS.seeds]
    except DataError as e:
      raise SystemExit(f"error: {e}") from None
    except ConfigError as e:  # e.g. a target out of reach at this bit width
      rows.append(
        {"variant": name, "aggregator": aggregator, "target_epsilon": target, "error": str(e)}
      )
      print(f"| {name} | - | - | - | {e} |", flush=True)
      continue
    eps = [r.get("privacy/epsilon", math.inf) for r in finals]
    rows.append(
      {
        "variant": name,
        "aggregator": aggregator,
        "target_epsilon": target,
        "epsilon": float(np.max(eps)),
        "accuracy": summary([r["eval/accuracy"] for r in finals]),
        "uplink_mibit_per_client_round": finals[0]["round_update_bits"] / 10 / 2**20,
        "seconds_per_round": float(np.median([r["round_seconds"] for r in finals])),
      }
    )
    print(_row(rows[-1]), flush=True)
  return rows


def _row(r: dict) -> str:
  acc = r["accuracy"]
  spread = f" ± {acc['std']:.4f}" if acc["std"] is not None else ""
  return (
    f"| {r['variant']} | {r['epsilon']:.4g} | {acc['mean']:.4f}{spread} | "
    f"{r['uplink_mibit_per_client_round']:.3f} | {r['seconds_per_round']:.2f} |"
  )


def draw(rows: list[dict], path: str) -> None:
  rows = [r for r in rows if "error" not in r]
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  matplotlib.rcParams["pdf.fonttype"] = 42
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  groups: dict[str, list[dict]] = {}
  for r in rows:
    if r["target_epsilon"] is None:
      ax.axhline(r["accuracy"]["mean"], color="gray", ls="--", label="float32, no DP")
      continue
    groups.setdefault(r["variant"].rsplit("_eps", 1)[0], []).append(r)
  for i, (label, items) in enumerate(sorted(groups.items())):
    items.sort(key=lambda r: r["epsilon"])
    x = np.array([r["epsilon"] for r in items]) * (1 + 0.02 * (i - len(groups) / 2))
    y = [r["accuracy"]["mean"] for r in items]
    err = [r["accuracy"]["std"] or 0.0 for r in items]
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
  ax.set_xscale("log")
  ax.set_xlabel("epsilon (delta = 1e-5, whole run)")
  ax.set_ylabel("test accuracy (mean ± std, seeds)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  print(f"drew {path}")


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise SystemExit("error: --workdir is required: the folder the runs are written to.")
  cli.check_json_path(FLAGS.json)
  print(
    "| variant | epsilon | test accuracy | uplink Mibit/client/round | s/round |\n"
    "|---|---|---|---|---|"
  )
  rows = run()
  cli.write_json(
    FLAGS.json,
    {"rounds": FLAGS.rounds, "seeds": FLAGS.seeds, "clip_norm": FLAGS.clip_norm, "rows": rows},
  )
  if FLAGS.figure:
    draw(rows, FLAGS.figure)


if __name__ == "__main__":
  app.run(main)
