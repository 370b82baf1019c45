"""Runs one config under several aggregators and draws the rate-accuracy frontier.

  python -m experiments.sweep --config=configs/emnist_fedavg.py --root=/tmp/sweep \\
      --config.dataset=leaf --config.data_dir=../shared/data/femnist_leaf_niid05 \\
      --variant='float32:aggregator=mean' \\
      --variant='eden2:aggregator=encoded_mean;stages=eden(bits=2)'

Each `--variant=NAME:KEY=VALUE;KEY=VALUE` overrides the config and runs in ROOT/NAME
(resuming what a previous sweep left). The sweep writes ROOT/frontier.md and .json (per
variant: bits per parameter of the model update, final test accuracy, cumulative
uplink) and ROOT/frontier.png/.svg (accuracy against rounds and against uplink bits).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jax
from absl import app, flags
from ml_collections import config_flags

from experiments import plot, train
from fedjax_compress import models

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/emnist_fedavg.py", "Base config.")
flags.DEFINE_string("root", None, "Directory for the variants' workdirs and the frontier.")
flags.DEFINE_multi_string("variant", [], "NAME:KEY=VALUE;KEY=VALUE overrides of the config.")
flags.mark_flags_as_required(["root"])


def parse_variant(text: str) -> tuple[str, dict]:
  """'eden2:aggregator=encoded_mean;stages=eden(bits=2)' -> ('eden2', {...})."""
  name, _, overrides = text.partition(":")
  if not name.isidentifier():
    raise ValueError(f"--variant={text!r}: write NAME:KEY=VALUE;KEY=VALUE, NAME an identifier.")
  values = {}
  for item in filter(None, overrides.split(";")):
    key, eq, value = item.partition("=")
    if not eq:
      raise ValueError(f"--variant={text!r}: {item!r} is not KEY=VALUE.")
    try:
      values[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      values[key.strip()] = value  # a plain string such as a stage spec
  return name, values


def frontier_row(name: str, history: list[dict], num_params: int, clients: int) -> dict:
  """One variant's point: update bits per parameter, final test accuracy, total uplink."""
  last = history[-1]
  evals = [r for r in history if "eval/accuracy" in r]
  bits_per_param = last["update_bits"] / (last["round"] * clients * num_params)
  return {"variant": name, "rounds": last["round"], "bits_per_param": bits_per_param,
          "fraction_of_float32": bits_per_param / 32,
          "final_eval_accuracy": evals[-1]["eval/accuracy"] if evals else None,
          "aggregated_bits": last["aggregated_bits"],
          "broadcast_bits_per_param": last["broadcasted_bits"] / (last["round"] * clients
                                                                 * num_params)}


def run(base, root: Path, variants: list[str]) -> list[dict]:
  rows, workdirs = [], []
  for text in variants:
    name, overrides = parse_variant(text)
    config = base.copy_and_resolve_references()
    config.unlock()
    for key, value in overrides.items():
      if key not in config:
        raise ValueError(f"--variant {name}: unknown config key {key!r}.")
      config[key] = value
    workdir = root / name
    history = train.train_and_evaluate(config, str(workdir))
    model = models.create_model(config.model, 10 if config.only_digits else 62)
    num_params = models.num_parameters(jax.eval_shape(model.init, jax.random.key(0)))
    rows.append(frontier_row(name, history, num_params, config.clients_per_round))
    workdirs.append(workdir)
  (root / "frontier.json").write_text(json.dumps(rows, indent=2))
  lines = ["| variant | bits / parameter (update) | of float32 | test accuracy, last round | "
           "cumulative uplink | downlink bits / parameter |", "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['variant']} | {r['bits_per_param']:.3f} | 1/{1 / r['fraction_of_float32']:.1f} | "
                 f"{r['final_eval_accuracy']:.4f} | {r['aggregated_bits'] / 2**30:.2f} Gibit | "
                 f"{r['broadcast_bits_per_param']:.3f} |")
  (root / "frontier.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  # Rates differ by orders of magnitude: a log axis keeps every curve readable.
  fig = plot.plot_workdirs([str(w) for w in workdirs], [r["variant"] for r in rows], logx=True)
  plot.save(fig, root / "frontier")
  return rows


def main(argv):
  del argv
  root = Path(FLAGS.root)
  root.mkdir(parents=True, exist_ok=True)
  try:
    run(FLAGS.config, root, FLAGS.variant)
  except (train.ConfigError, train.NonFiniteModelError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  app.run(main)
