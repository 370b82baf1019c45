"""Runs one config under several aggregators, and seeds; writes the rate-accuracy frontier.

  python -m experiments.sweep --config=configs/emnist_fedavg.py --root=/tmp/sweep \\
      --config.data.name=leaf --config.data.data_dir=../shared/data/femnist_leaf_niid05 \\
      --seeds=0,1,2 \\
      --variant='float32:aggregator=mean' \\
      --variant='eden2:aggregator=encoded_mean(stages="eden(bits=2)")'

Each `--variant=NAME:KEY=VALUE;KEY=VALUE` overrides the config as `--config.KEY=VALUE`
would. Every variant's config is checked before the first run.

Seeds. Without --seeds, each variant runs once with its config's seed, in ROOT/NAME (as
before seeds existed); so does --seeds=S, with seed S. With several seeds
(--seeds=0,1,2) each variant runs once per seed, seed S in ROOT/NAME/seed_S. Each run
resumes what an earlier sweep left in its workdir, and a workdir holding a run of another
config (another seed included) is refused (experiments.workdir): results are never
overwritten. The two layouts are not mixed: a several-seed sweep refuses a ROOT/NAME
holding a one-seed run, and a one-seed sweep refuses a ROOT/NAME holding seed_* runs.

Outputs, in ROOT (rewritten by each sweep from its runs):
- frontier.json, the summary: per variant its seeds, workdirs (relative to ROOT), rounds,
  clients per round and number of model parameters; the means of the frontier's columns;
  and `metrics`: for each final metric (the last evaluation's eval/*, the cumulative
  update_bits, aggregated_bits and broadcasted_bits, and each counter per parameter:
  bits_per_param, uplink_bits_per_param, broadcast_bits_per_param) its n, mean, sample
  standard deviation `std`, 95% confidence interval `ci95` = mean ± t·std/√n (t: Student's
  t, 0.975 quantile, n-1 degrees of freedom, from scipy or experiments.plot.T_975 without
  it), min, max and the seeds' `values`. With one seed `std` and `ci95` are null.
- frontier.md: the frontier table (means across seeds) and the statistics table, both
  printed as well.
- frontier.png/.svg: with several seeds, experiments.plot.plot_sweep (eval/accuracy over
  rounds, mean with its 95% CI band, and the frontier with error bars); with one, the
  runs' loss and accuracy against rounds and uplink bits.
- frontier.pdf: the one-panel frontier for a paper (experiments.plot.paper_figure).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from absl import app, flags, logging

from experiments import cli, overrides
from experiments.cli import fail as _fail

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "config",
  "configs/emnist_fedavg.py",
  "Base config file; override keys with --config.KEY=VALUE as for experiments.main.",
)
flags.DEFINE_string("root", None, "Directory for the variants' workdirs and the frontier.")
flags.DEFINE_multi_string(
  "variant",
  [],
  "NAME:KEY=VALUE;KEY=VALUE overrides of the config "
  "(KEY as in --config.KEY, e.g. aggregator.name).",
)
flags.DEFINE_string(
  "seeds",
  None,
  "Comma-separated seeds, e.g. 0,1,2: each variant runs "
  "once per seed (in ROOT/NAME/seed_S when several). Default: the config's "
  "seed, one run per variant in ROOT/NAME.",
)

_config_overrides: list[tuple[str, str]] = []
parse_flags = cli.flags_parser(_config_overrides)

SUMMARY, TABLE, FIGURE = "frontier.json", "frontier.md", "frontier"
SEED_DIR = "seed_{}"
# The cumulative counters of a run, and the names of their per-parameter rates.
COUNTERS = {
  "update_bits": "bits_per_param",
  "aggregated_bits": "uplink_bits_per_param",
  "broadcasted_bits": "broadcast_bits_per_param",
}
NOT_RESULTS = ("eval/num_examples", "eval/num_tokens")  # test-set sizes, the same every seed


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


def parse_seeds(text: str) -> list[int]:
  """'0,1,2' -> [0, 1, 2]: distinct non-negative integers, in the order given."""
  how = "write distinct non-negative integers, comma-separated, e.g. --seeds=0,1,2."
  items = [item.strip() for item in text.split(",")]
  if not all(items):
    raise ValueError(f"--seeds={text!r} has an empty item; {how}")
  seeds = []
  for item in items:
    try:
      seed = int(item)
    except ValueError:
      raise ValueError(f"--seeds={text!r}: {item!r} is not an integer; {how}") from None
    if seed < 0:
      raise ValueError(f"--seeds={text!r}: {seed} is negative; {how}")
    if seed in seeds:
      raise ValueError(f"--seeds={text!r}: seed {seed} is given twice; {how}")
    seeds.append(seed)
  return seeds


class VariantPlan(NamedTuple):
  """A variant's runs: one config and workdir (relative to ROOT) per seed."""

  name: str
  seeds: list[int]
  configs: list[Any]
  workdirs: list[Path]


def plan(base, variants: Sequence[str], seeds: Sequence[int] | None = None) -> list[VariantPlan]:
  """Each variant's runs. `seeds` None: the variant's config seed, in NAME; one seed: in
  NAME; several: seed S in NAME/seed_S. A variant that sets `seed` itself conflicts with
  `seeds` and is refused, as are two variants of one name (they would share workdirs)."""
  plans: list[VariantPlan] = []
  for text in variants:
    name, config = variant_config(base, text)
    if any(p.name == name for p in plans):
      raise ValueError(f"--variant {name} is given twice; give each variant its own NAME.")
    if seeds is not None and any(key == "seed" for key, _ in parse_variant(text)[1]):
      raise ValueError(f"--variant {name} sets seed, and --seeds sets it too; drop one.")
    run_seeds = list(seeds) if seeds is not None else [int(config.seed)]
    configs = []
    for seed in run_seeds:
      run_config = config.copy_and_resolve_references()
      run_config.seed = seed
      configs.append(run_config)
    workdirs = (
      [Path(name) / SEED_DIR.format(s) for s in run_seeds] if len(run_seeds) > 1 else [Path(name)]
    )
    plans.append(VariantPlan(name, run_seeds, configs, workdirs))
  return plans


def check_layout(root: Path, plans: Sequence[VariantPlan]) -> None:
  """Refuses to mix layouts: seed_* folders inside a one-seed run's workdir, or a one-seed
  run beside (around) a several-seed sweep's seed_* runs."""
  for p in plans:
    folder = root / p.name
    if not folder.is_dir():
      continue
    if len(p.seeds) > 1 and any((folder / f).exists() for f in ("config.json", "metrics.jsonl")):
      raise ValueError(
        f"{folder} holds a one-seed run, and several seeds run in "
        f"{folder}/seed_S: pass another --root (or --seeds with that run's "
        f"seed alone to resume it)."
      )
    if len(p.seeds) == 1 and any(
      c.is_dir() and c.name.startswith(SEED_DIR.format("")) for c in folder.iterdir()
    ):
      raise ValueError(
        f"{folder} holds the seed_* runs of a several-seed sweep, and one seed "
        f"runs in {folder} itself: pass those --seeds again, or another --root."
      )


def run_metrics(history: Sequence[dict], num_params: int, clients: int) -> dict[str, float]:
  """The final metrics of one run: its last evaluation's eval/* (not NOT_RESULTS),
  the cumulative bit counters, and each counter per parameter (see plot.bits_per_parameter)."""
  from experiments import plot  # pylint: disable=import-outside-toplevel

  last = history[-1]
  evals = [r for r in history if "eval/accuracy" in r]
  out = {
    k: v
    for k, v in sorted(evals[-1].items() if evals else ())
    if k.startswith("eval/")
    and k not in NOT_RESULTS
    and isinstance(v, (int, float))
    and not isinstance(v, bool)
  }
  out.update({counter: last[counter] for counter in COUNTERS})
  out.update(
    {
      rate: plot.bits_per_parameter(last, counter, clients, num_params)
      for counter, rate in COUNTERS.items()
    }
  )
  return out


def variant_summary(
  p: VariantPlan, histories: Sequence[Sequence[dict]], num_params: int, clients: int
) -> dict[str, Any]:
  """A variant's entry in frontier.json: what its runs are, the means the frontier table
  shows (under the names it had before seeds), and `metrics`: per final metric its
  statistics across seeds (plot.Stats.as_json, with the seeds' values)."""
  from experiments import plot  # pylint: disable=import-outside-toplevel

  per_seed = [run_metrics(h, num_params, clients) for h in histories]
  names = [k for k in per_seed[0] if all(k in m for m in per_seed)]
  stats = {k: plot.seed_stats([m[k] for m in per_seed]) for k in names}
  accuracy = stats.get("eval/accuracy")
  return {
    "variant": p.name,
    "seeds": p.seeds,
    "workdirs": [str(w) for w in p.workdirs],
    "rounds": histories[0][-1]["round"],
    "clients_per_round": clients,
    "num_params": num_params,
    "bits_per_param": stats["bits_per_param"].mean,
    "fraction_of_float32": stats["bits_per_param"].mean / 32,
    "final_eval_accuracy": accuracy.mean if accuracy else None,
    "aggregated_bits": stats["aggregated_bits"].mean,
    "broadcast_bits_per_param": stats["broadcast_bits_per_param"].mean,
    "metrics": {k: s.as_json([m[k] for m in per_seed]) for k, s in stats.items()},
  }


def summary(rows: list[dict[str, Any]], seeds: Sequence[int] | None) -> dict[str, Any]:
  """frontier.json: the variants' entries and how their statistics were computed."""
  from experiments import plot  # pylint: disable=import-outside-toplevel

  source = plot.t_quantile(1)[1]
  return {
    "seeds": None if seeds is None else list(seeds),
    "confidence": plot.CONFIDENCE,
    "interval": (
      "ci95 = mean ± t·std/√n; std: sample standard deviation (n-1); t: 0.975 "
      "quantile of Student's t with n-1 degrees of freedom, from "
      + (
        "scipy.special.stdtrit"
        if source == "scipy"
        else "experiments.plot.T_975 (scipy not installed)"
      )
      + "; null with one seed"
    ),
    "bits_per_parameter": plot.PER_PARAMETER.format(
      bits="the counter (update_bits, aggregated_bits or broadcasted_bits)"
    ),
    "variants": rows,
  }


def _number(x: float | None) -> str:
  """A table cell: 'n/a' for None, thousands separators for bit counts."""
  if x is None:
    return "n/a"
  return f"{x:,.1f}" if abs(x) >= 1e4 else f"{x:.4f}"


def frontier_table(rows: Sequence[dict[str, Any]]) -> list[str]:
  """The frontier, one line per variant (means across its seeds)."""
  lines = [
    "| variant | seeds | bits / parameter (update) | of float32 | test accuracy, last "
    "round | cumulative uplink | downlink bits / parameter |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    accuracy = r["final_eval_accuracy"]
    lines.append(
      f"| {r['variant']} | {len(r['seeds'])} | {r['bits_per_param']:.3f} | "
      f"1/{1 / r['fraction_of_float32']:.1f} | "
      f"{'n/a' if accuracy is None else f'{accuracy:.4f}'} | "
      f"{r['aggregated_bits'] / 2**30:.2f} Gibit | "
      f"{r['broadcast_bits_per_param']:.3f} |"
    )
  return lines


def stats_table(rows: Sequence[dict[str, Any]]) -> list[str]:
  """Per variant and final metric: n, mean, sample std and the 95% CI (n/a: one seed)."""
  lines = ["| variant | metric | n | mean | std | 95% CI |", "|---|---|---|---|---|---|"]
  for r in rows:
    for name, s in r["metrics"].items():
      ci = "n/a" if s["ci95"] is None else f"[{_number(s['ci95'][0])}, {_number(s['ci95'][1])}]"
      lines.append(
        f"| {r['variant']} | {name} | {s['n']} | {_number(s['mean'])} | "
        f"{_number(s['std'])} | {ci} |"
      )
  return lines


def _write(path: Path, text: str) -> None:
  """Writes `text` to a temporary file beside `path` and renames it into place."""
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def run(
  base, root: Path, variants: list[str], seeds: Sequence[int] | None = None
) -> dict[str, Any]:
  """Runs each variant for each seed (see the module doc for where); writes the summary
  (returned), the tables and the figures."""
  import jax  # pylint: disable=import-outside-toplevel  # after the command line is read
  from experiments import build, plot, train  # pylint: disable=import-outside-toplevel
  from fedjax_compress import models  # pylint: disable=import-outside-toplevel

  plans = plan(base, variants, seeds)
  check_layout(root, plans)
  bounds = [build.bind(p.configs[0]) for p in plans]  # all checked before the first runs
  rows, sweep_variants = [], []
  for p, bound in zip(plans, bounds):
    histories = [
      train.train_and_evaluate(config, str(root / workdir))
      for config, workdir in zip(p.configs, p.workdirs)
    ]
    model = build.build_model(bound, bound.load_data("train"))
    num_params = models.num_parameters(jax.eval_shape(model.init, jax.random.key(0)))
    clients = p.configs[0].clients_per_round
    rows.append(variant_summary(p, histories, num_params, clients))
    sweep_variants.append(
      plot.SweepVariant(p.name, p.seeds, [list(h) for h in histories], clients, num_params)
    )
  result = summary(rows, seeds)
  _write(root / SUMMARY, json.dumps(result, indent=2) + "\n")
  tables = frontier_table(rows) + [""] + stats_table(rows)
  _write(root / TABLE, "\n".join(tables) + "\n")
  print("\n".join(tables))
  if any(len(p.seeds) > 1 for p in plans):
    fig = plot.plot_sweep(sweep_variants)
  else:  # Rates differ by orders of magnitude: a log axis keeps every curve readable.
    fig = plot.plot_workdirs(
      [str(root / p.workdirs[0]) for p in plans], [p.name for p in plans], logx=True
    )
  plot.save(fig, root / FIGURE)
  plot.save(plot.paper_figure(sweep_variants), root / FIGURE, ("pdf",))
  return result


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}: see --help.", 2)
  if not FLAGS.root:
    _fail("--root is required: pass --root=DIR, a folder for the variants' workdirs.", 2)
  if not FLAGS.variant:
    _fail("no --variant given: pass --variant=NAME:KEY=VALUE;... once per variant.", 2)
  seeds = None
  if FLAGS.seeds is not None:
    try:
      seeds = parse_seeds(FLAGS.seeds)
    except ValueError as e:
      _fail(e, 2)
    if any(key == "seed" for key, _ in _config_overrides):
      _fail("--config.seed and --seeds are both given; pass the seeds with --seeds alone.", 2)
  if not FLAGS["verbosity"].present:  # as experiments.main: the console is for the tables
    logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    base = overrides.load(FLAGS.config, _config_overrides)
    root = Path(FLAGS.root)
    if root.exists() and not root.is_dir():
      raise ValueError(f"--root={root} is a file, not a folder: pass a folder path.")
    root.mkdir(parents=True, exist_ok=True)
    run(base, root, FLAGS.variant, seeds)
  except KeyboardInterrupt:
    _fail("interrupted: running the same command again resumes each variant.", cli.INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except  # sorted by cli.exit_for
    cli.exit_for(e)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
