"""Runs one config under several aggregators and draws the rate-accuracy frontier.

  python -m experiments.sweep --config=configs/emnist_fedavg.py --root=/tmp/sweep \\
      --config.data.name=leaf --config.data.data_dir=../shared/data/femnist_leaf_niid05 \\
      --variant='float32:aggregator=mean' \\
      --variant='eden2:aggregator=encoded_mean(stages="eden(bits=2)")'

Each `--variant=NAME:KEY=VALUE;KEY=VALUE` overrides the config as `--config.KEY=VALUE`
would, and runs in ROOT/NAME (resuming what a previous sweep left). Every variant's
config is checked before the first one runs. The sweep writes ROOT/frontier.md and .json (per
variant: bits per parameter of the model update, final test accuracy, cumulative
uplink) and ROOT/frontier.png/.svg (accuracy against rounds and against uplink bits).
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags

from experiments import cli, overrides
from experiments.cli import fail as _fail

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/emnist_fedavg.py", "Base config file; override keys "
                    "with --config.KEY=VALUE as for experiments.main.")
flags.DEFINE_string("root", None, "Directory for the variants' workdirs and the frontier.")
flags.DEFINE_multi_string("variant", [], "NAME:KEY=VALUE;KEY=VALUE overrides of the config "
                          "(KEY as in --config.KEY, e.g. aggregator.name).")

_config_overrides: list[tuple[str, str]] = []
parse_flags = cli.flags_parser(_config_overrides)


def parse_variant(text: str) -> tuple[str, list[tuple[str, str]]]:
  """'eden2:aggregator=encoded_mean(stages="eden(bits=2)")' -> ('eden2', [(key, value)])."""
  name, _, items = text.partition(":")
  if not name.isidentifier():
    raise ValueError(f"--variant={text!r}: write NAME:KEY=VALUE;KEY=VALUE, NAME an identifier.")
  pairs = []
  for item in filter(None, items.split(";")):
    key, eq, value = item.partition("=")
    if not eq:
      raise ValueError(f"--variant={text!r}: {item!r} is not KEY=VALUE.")
    pairs.append((key.strip(), value.strip()))
  return name, pairs


def variant_config(base, text: str):
  """(name, the base config with the variant's overrides applied)."""
  name, pairs = parse_variant(text)
  config = base.copy_and_resolve_references()
  config.unlock()
  for key, value in pairs:
    try:
      overrides.apply(config, key, value)
    except overrides.OverrideError as e:
      raise ValueError(f"--variant {name}: {e}") from None
  return name, config


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
  """Runs each variant in ROOT/NAME; writes the frontier table, JSON and figure."""
  import jax  # pylint: disable=import-outside-toplevel  # after the command line is read
  from experiments import build, plot, train  # pylint: disable=import-outside-toplevel
  from fedjax_compress import models  # pylint: disable=import-outside-toplevel
  configs = [variant_config(base, text) for text in variants]
  bounds = [build.bind(config) for _, config in configs]  # all checked before the first runs
  rows, workdirs = [], []
  for (name, config), bound in zip(configs, bounds):
    workdir = root / name
    history = train.train_and_evaluate(config, str(workdir))
    model = build.build_model(bound, bound.load_data("train"))
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
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}: see --help.", 2)
  if not FLAGS.root:
    _fail("--root is required: pass --root=DIR, a folder for the variants' workdirs.", 2)
  if not FLAGS.variant:
    _fail("no --variant given: pass --variant=NAME:KEY=VALUE;... once per variant.", 2)
  try:
    base = overrides.load(FLAGS.config, _config_overrides)
    root = Path(FLAGS.root)
    if root.exists() and not root.is_dir():
      raise ValueError(f"--root={root} is a file, not a folder: pass a folder path.")
    root.mkdir(parents=True, exist_ok=True)
    run(base, root, FLAGS.variant)
  except KeyboardInterrupt:
    _fail("interrupted: running the same command again resumes each variant.", cli.INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except  # sorted by cli.exit_for
    cli.exit_for(e)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
