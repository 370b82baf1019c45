"""Plots runs' loss and accuracy against rounds and against cumulative uplink bits, and a
sweep's seeds: mean curves with bands and the rate-accuracy frontier.

  python -m experiments.plot --workdirs=/tmp/runs/fedavg,/tmp/runs/comp --out=/tmp/plots/cmp \
      [--labels="FedAvg,FedAvg + compression"] [--bits=aggregated_bits] \
      [--unit=auto|Mibit|Gibit] [--logx] [--smooth=10]
  python -m experiments.plot --sweep=/tmp/sweep --out=/tmp/plots/frontier \
      [--metric=eval/accuracy] [--band=ci95|minmax] [--bits=aggregated_bits] \
      [--paper=frontier|rounds]

--workdirs reads each workdir's metrics.jsonl (written by experiments.train) and draws a
2x2 figure: loss and accuracy (train: thin line, eval: markers) vs round (top) and vs
cumulative uplink bits (bottom), one colour per workdir, labelled by the workdir's name
or --labels. Writes PREFIX.png and PREFIX.svg and prints one summary line per run.

--sweep reads ROOT/frontier.json of experiments.sweep (each variant's seeds, workdirs,
clients per round and number of model parameters) and the runs' metrics.jsonl, and
draws two panels: --metric over rounds, per variant the mean across seeds with a band
(--band: ci95, the 95% confidence interval of the mean, Student t with n-1 degrees of
freedom; or minmax), and the frontier: the final --metric against bits per parameter,
--bits / (rounds x clients per round x parameters), i.e. what one client sends per model
parameter per round (32 for float32), on a log2 axis, with error bars of the same band
in both directions. Writes PREFIX.png and PREFIX.svg, and PREFIX.pdf: one panel
(--paper) sized for a paper column, its text embedded as TrueType text (pdf.fonttype
42), not paths.

Plots are written only where --out says (it is required). A mistake (a flag, a workdir,
a sweep, a metrics file, a metric not there, --out's folder, matplotlib missing) prints
one `error: ...` line naming it and its fix, exits non-zero and writes no file.

From Python: `fig = plot_workdirs([...])`, `plot_runs({label: records})`,
`plot_sweep(read_sweep(root))` or `paper_figure(read_sweep(root))`; each returns a
matplotlib Figure built without pyplot, so no global backend is touched. `seed_stats`
gives the mean, sample standard deviation and 95% CI of values across seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Mapping, NamedTuple, Sequence, cast

METRICS = "metrics.jsonl"
BIT_KEYS = ("aggregated_bits", "broadcasted_bits", "update_bits")
_BIT_NAMES = {
  "aggregated_bits": "uplink",
  "broadcasted_bits": "downlink",
  "update_bits": "model-update uplink",
}
UNITS = {"bit": 1, "Kibit": 2**10, "Mibit": 2**20, "Gibit": 2**30, "Tibit": 2**40}


class PlotError(ValueError):
  """A workdir or its metrics.jsonl is missing, empty or malformed; the message says which."""


_NUMERIC = ("round", "train/loss", "train/accuracy", "eval/loss", "eval/accuracy", *BIT_KEYS)


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of `workdir/metrics.jsonl`, one dict per round, in file order."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise PlotError(
      f"workdir {workdir!r} does not exist (pass the --workdir of a run of experiments.main)."
    )
  path = os.path.join(workdir, METRICS)
  if not os.path.isfile(path):
    raise PlotError(
      f"{path} not found: {workdir!r} is not the workdir of a run, or the run "
      "has not finished its first round."
    )
  records = []
  try:
    with open(path, encoding="utf-8") as f:
      for i, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise PlotError(
            f"{path}, line {i}: not JSON ({e}); delete or repair that line "
            "(a run killed mid-write leaves a partial last line)."
          ) from None
        if not isinstance(record, dict) or "round" not in record:
          raise PlotError(
            f"{path}, line {i}: expected an object with a 'round' key; this is "
            "not a metrics.jsonl written by experiments.train."
          )
        if bad := [
          k
          for k in _NUMERIC
          if k in record and not (_is_number(record[k]) or (record[k] is None and k != "round"))
        ]:
          raise PlotError(
            f"{path}, line {i}: {bad[0]}={record[bad[0]]!r} is not a number; "
            "this is not a metrics.jsonl written by experiments.train."
          )
        records.append(record)
  except UnicodeDecodeError as e:
    raise PlotError(
      f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); this is not a "
      "metrics.jsonl written by experiments.train."
    ) from None
  except OSError as e:
    raise PlotError(f"cannot read {path}: {e.strerror or e}.") from None
  if not records:
    raise PlotError(f"{path} is empty: the run has not finished a round yet.")
  return records


def _series(records, key, x_key, scale=1.0):
  """(xs, ys) over the records that have both keys."""
  pairs = [
    (r[x_key] / scale, r[key])
    for r in records
    if r.get(key) is not None and r.get(x_key) is not None
  ]
  return [p[0] for p in pairs], [p[1] for p in pairs]


def _smooth(ys, window):
  """Trailing moving average over `window` points (1 = unchanged)."""
  if window <= 1:
    return list(ys)
  out, total = [], 0.0
  for i, y in enumerate(ys):
    total += y
    if i >= window:
      total -= ys[i - window]
    out.append(total / min(i + 1, window))
  return out


def _pick_unit(max_bits: float) -> str:
  return "Gibit" if max_bits >= 10 * 2**30 else "Mibit"


def plot_runs(
  runs: Mapping[str, Sequence[Mapping[str, Any]]],
  *,
  bits: str = "aggregated_bits",
  unit: str = "auto",
  logx: bool = False,
  smooth: int = 1,
  title: str | None = None,
):
  """A Figure: loss and accuracy vs round (top) and vs cumulative `bits` (bottom).

  Args:
    runs: label -> metrics records (as `read_metrics` returns), one curve each.
    bits: the cumulative bit counter on the bottom row's x axis; aggregated_bits
      is the uplink.
    unit: 'Mibit', 'Gibit' (or 'bit', 'Kibit', 'Tibit'), or 'auto'.
    logx: log scale for the bits axis.
    smooth: moving-average window for the per-round train curves.
    title: the figure title; default names the x-axis counter.
  """
  from matplotlib.figure import Figure  # Deferred: matplotlib imports slowly.

  if not runs:
    raise PlotError("nothing to plot: no runs given.")
  if bits not in BIT_KEYS:
    raise PlotError(f"bits={bits!r}; valid counters are {list(BIT_KEYS)}.")
  for label, records in runs.items():
    if not any(bits in r for r in records):
      raise PlotError(
        f"run {label!r} has no {bits!r} in its metrics; pick another --bits "
        f"(one of {list(BIT_KEYS)})."
      )
  if unit == "auto":
    unit = _pick_unit(max(r.get(bits, 0) for records in runs.values() for r in records))
  if unit not in UNITS:
    raise PlotError(f"unit={unit!r}; valid units are {list(UNITS)} or 'auto'.")
  scale = UNITS[unit]

  fig = Figure(figsize=(12, 8.5), layout="constrained")
  axes = fig.subplots(2, 2)
  colours = [f"C{i % 10}" for i in range(len(runs))]
  for (label, records), colour in zip(runs.items(), colours):
    for row, (x_key, x_scale) in enumerate((("round", 1.0), (bits, scale))):
      for col, metric in enumerate(("loss", "accuracy")):
        ax = axes[row, col]
        xs, ys = _series(records, f"train/{metric}", x_key, x_scale)
        if xs:
          ax.plot(
            xs, _smooth(ys, smooth), color=colour, lw=1.0, alpha=0.55, label=f"{label}, train"
          )
        xs, ys = _series(records, f"eval/{metric}", x_key, x_scale)
        if xs:
          ax.plot(xs, ys, color=colour, lw=2.0, marker="o", ms=3.5, label=f"{label}, eval")
  smoothing = f" (train: moving average of {smooth} rounds)" if smooth > 1 else ""
  for row, xlabel in enumerate(("round", f"cumulative {_BIT_NAMES[bits]} ({bits}, {unit})")):
    for col, metric in enumerate(("loss", "accuracy")):
      ax = axes[row, col]
      ax.set_xlabel(xlabel)
      ax.set_ylabel(metric)
      ax.grid(True, alpha=0.3)
      if row == 1 and logx:
        ax.set_xscale("log")
  axes[0, 1].legend(loc="lower right", fontsize="small")
  fig.suptitle((title or f"Loss and accuracy vs rounds and vs {_BIT_NAMES[bits]} bits") + smoothing)
  return fig


def plot_workdirs(
  workdirs: Sequence[str | os.PathLike], labels: Sequence[str] | None = None, **kwargs
):
  """`plot_runs` over workdirs' metrics.jsonl; labels default to the workdirs' names."""
  workdirs = [os.fspath(w) for w in workdirs]
  if not workdirs:
    raise PlotError("no workdirs given.")
  if labels is None:
    labels = [
      os.path.basename(os.path.normpath(w)) or w for w in cast(list[str], workdirs)
    ]  # fspath'd above
  if len(labels) != len(workdirs):
    raise PlotError(f"{len(labels)} labels for {len(workdirs)} workdirs; give one label each.")
  if len(set(labels)) != len(labels):
    raise PlotError(f"labels {list(labels)} are not distinct; pass --labels.")
  return plot_runs({label: read_metrics(w) for label, w in zip(labels, workdirs)}, **kwargs)


def save(fig, prefix: str | os.PathLike, formats: Sequence[str] = ("png", "svg")) -> list[str]:
  """Writes PREFIX.png and PREFIX.svg, or PREFIX.FMT for each of `formats` (creating
  folders); returns the paths.

  Each file is written to a temporary name beside it and renamed into place, so a failed
  or interrupted save leaves no partial file and no earlier plot half-overwritten. PDF
  and PostScript embed TrueType fonts (pdf.fonttype 42): their text stays text, which a
  journal's checks and a reader's search find, not outlines.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel

  prefix = os.fspath(prefix)
  folder = os.path.dirname(prefix)
  if folder:
    os.makedirs(folder, exist_ok=True)
  paths = []
  for fmt in formats:
    path = f"{prefix}.{fmt}"
    # open() (not mkstemp) so the file gets the usual umask permissions.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
      with open(tmp, "wb") as f, matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        fig.savefig(f, format=fmt, dpi=120)
      os.replace(tmp, path)
    except BaseException:
      try:
        os.unlink(tmp)
      except OSError:
        pass
      raise
    paths.append(path)
  return paths


def summary(label: str, records: Sequence[Mapping[str, Any]], bits: str = "aggregated_bits") -> str:
  """One line: rounds, final eval accuracy and the cumulative bits of a run."""
  last = records[-1]
  evals = [r for r in records if "eval/accuracy" in r]
  acc = (
    f"eval acc {evals[-1]['eval/accuracy']:.4f} (round {evals[-1]['round']})"
    if evals
    else "no eval"
  )
  total = last.get(bits)
  total = f"{total / 2**20:,.2f} Mibit" if total is not None else "n/a"
  return f"{label}: {last['round']} rounds, {acc}, {bits} {total}"


# --- Several seeds: statistics, bands, the rate-accuracy frontier, the paper figure. ---

CONFIDENCE = 0.95
# Two-sided 95% Student t quantiles t(0.975, dof), used when scipy is not installed
# (values from scipy.special.stdtrit, 4 decimals). A dof between entries uses the entry
# below it, and dof > 120 uses dof 120: a slightly larger t, so the interval is never
# narrower than the exact one.
T_975 = {
  1: 12.7062,
  2: 4.3027,
  3: 3.1824,
  4: 2.7764,
  5: 2.5706,
  6: 2.4469,
  7: 2.3646,
  8: 2.3060,
  9: 2.2622,
  10: 2.2281,
  11: 2.2010,
  12: 2.1788,
  13: 2.1604,
  14: 2.1448,
  15: 2.1314,
  16: 2.1199,
  17: 2.1098,
  18: 2.1009,
  19: 2.0930,
  20: 2.0860,
  21: 2.0796,
  22: 2.0739,
  23: 2.0687,
  24: 2.0639,
  25: 2.0595,
  26: 2.0555,
  27: 2.0518,
  28: 2.0484,
  29: 2.0452,
  30: 2.0423,
  40: 2.0211,
  60: 2.0003,
  120: 1.9799,
}
BANDS = {"ci95": "95% CI of the mean across seeds (Student t)", "minmax": "min-max across seeds"}
PER_PARAMETER = (
  "bits per parameter = {bits} / (rounds x clients per round x model "
  "parameters): what one client sends per model parameter per round, averaged "
  "over the run (32 for float32)"
)


def t_quantile(dof: int, *, use_scipy: bool = True) -> tuple[float, str]:
  """(t(0.975, dof), where it came from: 'scipy' or 'table').

  scipy's `special.stdtrit` (exact) when it imports, else `T_975` (see its comment).
  """
  if dof < 1:
    raise ValueError(f"dof={dof}: a t quantile needs at least 1 degree of freedom.")
  if use_scipy:
    try:
      from scipy.special import stdtrit  # pylint: disable=import-outside-toplevel

      return float(stdtrit(dof, 0.5 + CONFIDENCE / 2)), "scipy"
    except ImportError:
      pass
  return T_975[max(d for d in T_975 if d <= dof)], "table"


class Stats(NamedTuple):
  """A metric across seeds.

  `std` is the sample standard deviation (n - 1 in the denominator). The interval is
  mean ± t(0.975, n - 1) · std / √n, the 95% confidence interval of the mean under a
  normal model of the seeds' values. With one seed there is no spread to estimate:
  `std`, `ci_low` and `ci_high` are None (not available), never 0.
  """

  n: int
  mean: float
  std: float | None
  ci_low: float | None
  ci_high: float | None
  minimum: float
  maximum: float

  def as_json(self, values: Sequence[float] | None = None) -> dict[str, Any]:
    """{n, mean, std, ci95: [low, high] or null, min, max[, values]} for a JSON summary."""
    out = {
      "n": self.n,
      "mean": self.mean,
      "std": self.std,
      "ci95": None if self.ci_low is None else [self.ci_low, self.ci_high],
      "min": self.minimum,
      "max": self.maximum,
    }
    if values is not None:
      out["values"] = list(values)
    return out

  def interval(self, band: str) -> tuple[float, float] | None:
    """(low, high) of `band` ('ci95' or 'minmax'); None for a CI of one seed."""
    if band == "minmax":
      return self.minimum, self.maximum
    # ci_low and ci_high are None together.
    return None if self.ci_low is None else (self.ci_low, cast(float, self.ci_high))


def seed_stats(values: Sequence[float], *, use_scipy: bool = True) -> Stats:
  """`Stats` of one metric's values, one per seed (e.g. [1, 2, 3] -> mean 2, std 1,
  CI 2 ± 4.303 / √3)."""
  values = [float(v) for v in values]
  n = len(values)
  if n == 0:
    raise ValueError("no values: statistics need at least one seed.")
  mean = math.fsum(values) / n
  if n == 1:
    return Stats(1, mean, None, None, None, mean, mean)
  std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
  half = t_quantile(n - 1, use_scipy=use_scipy)[0] * std / math.sqrt(n)
  return Stats(n, mean, std, mean - half, mean + half, min(values), max(values))


def bits_per_parameter(
  record: Mapping[str, Any], bits: str, clients_per_round: int, num_params: int
) -> float:
  """A cumulative counter as bits per parameter: record[bits] / (record's round x
  clients_per_round x num_params) (32 for float32 updates)."""
  return record[bits] / (record["round"] * clients_per_round * num_params)


class Band(NamedTuple):
  """A metric over rounds across seeds: the mean and the band's bounds at each round
  that every seed has; `low`/`high` are None when the band is not available (one seed,
  band 'ci95')."""

  xs: list[float]
  mean: list[float]
  low: list[float] | None
  high: list[float] | None
  n: int


def band_series(runs: Sequence[Sequence[Mapping[str, Any]]], key: str, band: str = "ci95") -> Band:
  """The mean of `key` over `runs` (one record list per seed) at each round they all
  have, with the `band` ('ci95' or 'minmax') around it."""
  by_round = [{r["round"]: r[key] for r in records if r.get(key) is not None} for records in runs]
  rounds = sorted(set.intersection(*(set(d) for d in by_round))) if by_round else []
  stats = [seed_stats([d[x] for d in by_round]) for x in rounds]
  bounds = [s.interval(band) for s in stats]
  if not bounds or any(b is None for b in bounds):
    return Band(rounds, [s.mean for s in stats], None, None, len(runs))
  known = cast(list[tuple[float, float]], bounds)  # none of them is None (checked above)
  return Band(
    rounds, [s.mean for s in stats], [b[0] for b in known], [b[1] for b in known], len(runs)
  )


class SweepVariant(NamedTuple):
  """One variant of a sweep, as `read_sweep` returns it: its seeds' metrics records and
  what bits per parameter need (the sweep summary records both counts)."""

  name: str
  seeds: list[int]
  runs: list[list[dict[str, Any]]]
  clients_per_round: int
  num_params: int


SUMMARY = "frontier.json"


def read_sweep(root: str | os.PathLike) -> list[SweepVariant]:
  """The variants of the sweep in `root` (its --root): ROOT/frontier.json names each
  variant's seeds, workdirs (relative to ROOT), clients per round and number of model
  parameters; each workdir's metrics.jsonl is read."""
  root = os.fspath(root)
  path = os.path.join(root, SUMMARY)
  if not os.path.isdir(root):
    raise PlotError(f"sweep {root!r} does not exist (pass the --root of experiments.sweep).")
  if not os.path.isfile(path):
    raise PlotError(
      f"{path} not found: {root!r} is not the --root of a finished "
      "experiments.sweep (the sweep writes it after its last run)."
    )
  try:
    with open(path, encoding="utf-8") as f:
      summary = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise PlotError(f"cannot read {path} ({e}); run the sweep again to rewrite it.") from None
  if not isinstance(summary, dict) or not isinstance(summary.get("variants"), list):
    raise PlotError(
      f"{path} was written by an experiments.sweep without seeds; run the same "
      "sweep command again (its runs resume) to rewrite it."
    )
  variants = []
  for row in summary["variants"]:
    try:
      variants.append(
        SweepVariant(
          row["variant"],
          list(row["seeds"]),
          [read_metrics(os.path.join(root, w)) for w in row["workdirs"]],
          int(row["clients_per_round"]),
          int(row["num_params"]),
        )
      )
    except (KeyError, TypeError) as e:
      raise PlotError(f"{path}: a variant lacks {e}; run the sweep again to rewrite it.") from None
  if not variants:
    raise PlotError(f"{path} lists no variants.")
  return variants


def _require(variants: Sequence[SweepVariant], key: str, flag: str) -> None:
  """PlotError unless every seed's run of every variant has `key`."""
  for v in variants:
    for seed, records in zip(v.seeds, v.runs):
      if not any(r.get(key) is not None for r in records):
        present = sorted({k for r in records for k, x in r.items() if _is_number(x)} - {"round"})
        raise PlotError(
          f"{flag}={key!r} is not in the metrics of variant {v.name!r}, seed "
          f"{seed}; pick one of {present}."
        )


def _final(records: Sequence[Mapping[str, Any]], key: str) -> Mapping[str, Any]:
  """The last record that has `key`."""
  return next(r for r in reversed(records) if r.get(key) is not None)


class FrontierPoint(NamedTuple):
  """A variant on the rate-accuracy plane: bits per parameter (x) and the final value of
  the metric (y), each across seeds."""

  name: str
  x: Stats
  y: Stats


def frontier_points(
  variants: Sequence[SweepVariant], metric: str = "eval/accuracy", bits: str = "aggregated_bits"
) -> list[FrontierPoint]:
  """Per variant: `bits` per parameter at the run's last round and `metric`'s last value,
  each as `Stats` across the seeds."""
  _require(variants, metric, "--metric")
  _require(variants, bits, "--bits")
  return [
    FrontierPoint(
      v.name,
      seed_stats(
        [
          bits_per_parameter(_final(r, bits), bits, v.clients_per_round, v.num_params)
          for r in v.runs
        ]
      ),
      seed_stats([_final(r, metric)[metric] for r in v.runs]),
    )
    for v in variants
  ]


def _errors(stats: Stats, band: str) -> list[list[float]] | None:
  """matplotlib's [[below], [above]] error bar of `band`, or None without one."""
  bounds = stats.interval(band)
  if bounds is None or bounds[0] == bounds[1]:
    return None
  return [[stats.mean - bounds[0]], [bounds[1] - stats.mean]]


def _seeds_text(variants: Sequence[SweepVariant]) -> str:
  counts = sorted({len(v.runs) for v in variants})
  return f"{'/'.join(map(str, counts))} seed{'s' if counts != [1] else ''}"


def draw_rounds(
  ax, variants: Sequence[SweepVariant], metric: str, band: str, fontsize: float | None = None
) -> None:
  """`metric` over rounds: per variant the mean across seeds, the band shaded."""
  from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel

  _require(variants, metric, "--metric")
  for i, v in enumerate(variants):
    series = band_series(v.runs, metric, band)
    colour = f"C{i % 10}"
    sparse = len(series.xs) <= 60
    ax.plot(
      series.xs,
      series.mean,
      color=colour,
      lw=1.5,
      marker="o" if sparse else None,
      ms=3,
      label=f"{v.name} (n={series.n})",
    )
    if series.low is not None:
      ax.fill_between(series.xs, series.low, series.high, color=colour, alpha=0.2, lw=0)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("round", fontsize=fontsize)
  ax.set_ylabel(metric, fontsize=fontsize)
  ax.grid(True, alpha=0.3)
  ax.legend(
    fontsize=fontsize or "small",
    title_fontsize=fontsize or "small",
    title=f"mean; band: {BANDS[band]}",
  )


def draw_frontier(
  ax,
  variants: Sequence[SweepVariant],
  metric: str,
  bits: str,
  band: str,
  fontsize: float | None = None,
  define: bool = True,
) -> None:
  """Final `metric` against `bits` per parameter (log2 axis), one point per variant with
  error bars of `band` across seeds in both directions; `define` adds the definition of
  bits per parameter under the axis label (a paper's caption says it instead)."""
  points = frontier_points(variants, metric, bits)
  for i, p in enumerate(points):
    ax.errorbar(
      [p.x.mean],
      [p.y.mean],
      xerr=_errors(p.x, band),
      yerr=_errors(p.y, band),
      fmt="o",
      color=f"C{i % 10}",
      ms=4,
      capsize=3,
      label=f"{p.name} (n={p.y.n})",
    )
    ax.annotate(
      p.name,
      (p.x.mean, p.y.mean),
      xytext=(4, 4),
      textcoords="offset points",
      fontsize=fontsize or "small",
    )
  if all(p.x.mean > 0 for p in points):  # rates span orders of magnitude: log2 keeps them apart
    from matplotlib.ticker import FuncFormatter  # pylint: disable=import-outside-toplevel

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
  ax.margins(x=0.12)
  definition = f"\n{bits} / (rounds x clients per round x parameters)" if define else ""
  ax.set_xlabel(f"{_BIT_NAMES[bits]} bits per parameter{definition}", fontsize=fontsize)
  ax.set_ylabel(f"final {metric}", fontsize=fontsize)
  ax.grid(True, alpha=0.3)
  ax.set_title(f"error bars: {BANDS[band]}", fontsize=fontsize or "small")


def plot_sweep(
  variants: Sequence[SweepVariant],
  *,
  metric: str = "eval/accuracy",
  bits: str = "aggregated_bits",
  band: str = "ci95",
  title: str | None = None,
):
  """A Figure: `metric` over rounds with bands (left), the frontier (right)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  _check_sweep_options(variants, bits, band)
  fig = Figure(figsize=(13, 5.5), layout="constrained")
  left, right = fig.subplots(1, 2)
  draw_rounds(left, variants, metric, band)
  draw_frontier(right, variants, metric, bits, band)
  fig.suptitle(title or f"{metric}: mean across {_seeds_text(variants)}, {BANDS[band]}")
  return fig


PAPER_PANELS = ("frontier", "rounds")


def paper_figure(
  variants: Sequence[SweepVariant],
  *,
  panel: str = "frontier",
  metric: str = "eval/accuracy",
  bits: str = "aggregated_bits",
  band: str = "ci95",
):
  """One panel (`frontier` or `rounds`) sized for a paper column (3.4 x 2.6 in, 8 pt
  text); `save` writes its PDF with TrueType text (pdf.fonttype 42), not paths."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  _check_sweep_options(variants, bits, band)
  if panel not in PAPER_PANELS:
    raise PlotError(f"panel={panel!r}; valid panels are {list(PAPER_PANELS)}.")
  fig = Figure(figsize=(3.4, 2.6), layout="constrained")
  ax = fig.subplots()
  if panel == "frontier":
    draw_frontier(ax, variants, metric, bits, band, fontsize=7, define=False)
  else:
    draw_rounds(ax, variants, metric, band, fontsize=7)
  ax.tick_params(labelsize=7)
  from matplotlib.text import Text  # pylint: disable=import-outside-toplevel

  for text in fig.findobj(Text):  # no ligatures: "fi" stays two letters a search finds
    if hasattr(text, "set_fontfeatures"):  # matplotlib >= 3.11 shapes text with ligatures
      text.set_fontfeatures(["-liga"])
  return fig


def _check_sweep_options(variants, bits: str, band: str) -> None:
  if not variants:
    raise PlotError("nothing to plot: no variants given.")
  if bits not in BIT_KEYS:
    raise PlotError(f"bits={bits!r}; valid counters are {list(BIT_KEYS)}.")
  if band not in BANDS:
    raise PlotError(f"band={band!r}; valid bands are {list(BANDS)}.")


def sweep_summary(variant: SweepVariant, metric: str, bits: str, band: str) -> str:
  """One line: seeds, rounds, the final metric (mean and band) and bits per parameter."""
  p = frontier_points([variant], metric, bits)[0]
  bounds = p.y.interval(band)
  spread = f" [{bounds[0]:.4f}, {bounds[1]:.4f}] ({band})" if bounds else ""
  rounds = max(r[-1]["round"] for r in variant.runs)
  return (
    f"{variant.name}: {p.y.n} seed{'s' if p.y.n > 1 else ''}, {rounds} rounds, final "
    f"{metric} {p.y.mean:.4f}{spread}, {_BIT_NAMES[bits]} {p.x.mean:.3f} bits/parameter"
  )


def _split(text: str | None) -> list[str] | None:
  return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


class _UsageError(Exception):
  """A command-line mistake: printed as one `error:` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
  """argparse that reports a mistake as one `error:` line (no usage block), exit status 2."""

  def error(self, message):
    raise _UsageError(f"{message}; see python -m experiments.plot --help.")


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="python -m experiments.plot", description=__doc__.split("\n")[0])
  parser.add_argument(
    "--workdirs", default=None, help="comma-separated run workdirs (this or --sweep is required)"
  )
  parser.add_argument(
    "--sweep",
    default=None,
    help="the --root of an experiments.sweep: mean curves with bands across "
    "its seeds, the rate-accuracy frontier, and a one-panel PDF",
  )
  parser.add_argument(
    "--out",
    default=None,
    help="output prefix (required; plots go only where told): writes "
    "PREFIX.png and PREFIX.svg, and PREFIX.pdf with --sweep; its folder "
    "must exist",
  )
  parser.add_argument(
    "--bits",
    default="aggregated_bits",
    choices=BIT_KEYS,
    help="cumulative counter for the x axis (default: the uplink); with "
    "--sweep, the frontier's bits per parameter",
  )
  parser.add_argument("--title", default=None)
  workdirs = parser.add_argument_group("with --workdirs")
  workdirs.add_argument(
    "--labels", default=None, help="comma-separated curve labels (default: the workdirs' names)"
  )
  workdirs.add_argument(
    "--unit", default=None, choices=["auto", *UNITS], help="unit of the bits axis (default: auto)"
  )
  workdirs.add_argument("--logx", action="store_true", help="log scale for the bits axis")
  workdirs.add_argument(
    "--smooth",
    type=int,
    default=None,
    help="moving-average window (rounds) for the train curves; 1 (the default): none",
  )
  sweep = parser.add_argument_group("with --sweep")
  sweep.add_argument(
    "--metric",
    default=None,
    help="the metric over rounds and on the frontier (default: eval/accuracy)",
  )
  sweep.add_argument(
    "--band",
    default=None,
    choices=list(BANDS),
    help="band and error bars across seeds: ci95 (the default: the 95%% "
    "confidence interval of the mean, Student t) or minmax",
  )
  sweep.add_argument(
    "--paper",
    default=None,
    choices=PAPER_PANELS,
    help="the panel of the paper figure PREFIX.pdf (default: frontier)",
  )
  return parser


_WORKDIRS_ONLY = ("labels", "unit", "logx", "smooth")
_SWEEP_ONLY = ("metric", "band", "paper")


def _check_mode(args: argparse.Namespace) -> None:
  """Raises _UsageError unless exactly one of --workdirs and --sweep is given, with only
  the flags that apply to it."""
  if args.workdirs is None and args.sweep is None:
    raise _UsageError(
      "--workdirs is required (or --sweep=ROOT for a sweep): pass the runs' "
      "workdirs, comma-separated, e.g. --workdirs=/tmp/runs/fedavg,/tmp/runs/comp."
    )
  if args.workdirs is not None and args.sweep is not None:
    raise _UsageError(
      "--workdirs and --sweep are both given; pass one: runs' workdirs, or a sweep's --root."
    )
  mode, others = (
    ("--sweep", _WORKDIRS_ONLY) if args.sweep is not None else ("--workdirs", _SWEEP_ONLY)
  )
  for name in others:
    if getattr(args, name) not in (None, False):
      other = "--workdirs" if mode == "--sweep" else "--sweep"
      raise _UsageError(f"--{name} applies to {other} plots, not to {mode}; drop it.")
  if args.out is None:
    raise _UsageError(
      "--out is required: pass a file prefix such as "
      "--out=/tmp/plots/accuracy_vs_bits (plots are written only where told)."
    )


def _check_out(prefix: str, formats: Sequence[str] = ("png", "svg")) -> None:
  """Raises _UsageError unless PREFIX.FMT can be written: the folder exists, is writable."""
  if not prefix:
    raise _UsageError("--out is empty; pass a file prefix such as --out=plots/accuracy_vs_bits.")
  if prefix.endswith(("/", os.sep)):
    raise _UsageError(
      f"--out={prefix} names a folder; pass a file prefix inside it, such as "
      f"--out={os.path.join(prefix, 'accuracy_vs_bits')}."
    )
  folder = os.path.dirname(prefix) or "."
  if not os.path.isdir(folder):
    what = "is not a folder" if os.path.exists(folder) else "does not exist"
    raise _UsageError(
      f"--out={prefix}: folder {folder!r} {what}; create it first or pick another --out."
    )
  import tempfile

  try:  # os.access says yes to root on read-only mounts; this probe leaves no file behind.
    if not os.access(folder, os.W_OK | os.X_OK):
      raise PermissionError(13, "Permission denied")
    tempfile.TemporaryFile(dir=folder).close()
  except OSError as e:
    raise _UsageError(
      f"--out={prefix}: folder {folder!r} is not writable ({e.strerror or e}); pick another --out."
    ) from None
  for fmt in formats:
    if os.path.isdir(f"{prefix}.{fmt}"):
      raise _UsageError(f"--out={prefix}: {prefix}.{fmt} is a folder; pick another --out.")


def _import_matplotlib() -> None:
  """Selects the Agg backend; PlotError naming the fix when matplotlib is missing."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise PlotError(
      f"matplotlib is not installed ({e}); install the plot extra: pip install -e '.[plot]'."
    ) from None
  matplotlib.use("Agg")


def _save_all(figures: Sequence[tuple[Any, Sequence[str]]], prefix: str) -> list[str]:
  """Saves each (figure, formats) at `prefix`; an OSError becomes a PlotError."""
  paths = []
  for fig, formats in figures:
    try:
      paths += save(fig, prefix, formats)
    except OSError as e:
      raise PlotError(
        f"cannot write {prefix}.{'/.'.join(formats)}: {e.strerror or e}; pick another --out."
      ) from None
  return paths


def _main_sweep(args: argparse.Namespace) -> list[str]:
  """--sweep: PREFIX.png/.svg (bands and frontier) and PREFIX.pdf (one panel)."""
  metric, band = args.metric or "eval/accuracy", args.band or "ci95"
  variants = read_sweep(args.sweep)
  _import_matplotlib()
  fig = plot_sweep(variants, metric=metric, bits=args.bits, band=band, title=args.title)
  paper = paper_figure(
    variants, panel=args.paper or "frontier", metric=metric, bits=args.bits, band=band
  )
  paths = _save_all([(fig, ("png", "svg")), (paper, ("pdf",))], args.out)
  for variant in variants:
    print(sweep_summary(variant, metric, args.bits, band))
  return paths


def _main_workdirs(args: argparse.Namespace) -> list[str]:
  """--workdirs: PREFIX.png/.svg, one curve per workdir."""
  workdirs, labels = _split(args.workdirs), _split(args.labels)
  assert workdirs is not None  # main checked --workdirs
  if labels is None:
    labels = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
  if len(set(labels)) != len(labels):
    raise PlotError(
      f"labels {labels} are not distinct; pass --labels with one distinct label per workdir."
    )
  runs = {label: read_metrics(w) for label, w in zip(labels, workdirs)}
  _import_matplotlib()
  fig = plot_runs(
    runs,
    bits=args.bits,
    unit=args.unit or "auto",
    logx=args.logx,
    smooth=args.smooth or 1,
    title=args.title,
  )
  paths = _save_all([(fig, ("png", "svg"))], args.out)
  for label, records in runs.items():
    print(summary(label, records, args.bits))
  return paths


def main(argv: Sequence[str] | None = None) -> list[str]:
  """The command line: writes the plot and returns its paths.

  Every mistake (flags, workdirs, a sweep, metrics files, a metric not there, --out)
  raises SystemExit with one `error: ...` line, before any file is written; exit status
  2 for flag mistakes, 1 for the rest.
  """
  try:
    args = _parser().parse_args(argv)
    _check_mode(args)
    if args.workdirs is not None:
      workdirs, labels = _split(args.workdirs), _split(args.labels)
      if not workdirs:
        raise _UsageError(
          f"--workdirs={args.workdirs!r} names no workdir; pass the runs' "
          "workdirs, comma-separated."
        )
      if labels is not None and len(labels) != len(workdirs):
        raise _UsageError(
          f"--labels gives {len(labels)} labels for {len(workdirs)} workdirs; "
          "give one label per workdir, comma-separated, in the same order."
        )
      if args.smooth is not None and args.smooth < 1:
        raise _UsageError(
          f"--smooth={args.smooth}: the moving-average window must be at least 1 (1: no smoothing)."
        )
    elif not args.sweep:
      raise _UsageError("--sweep is empty; pass the --root of an experiments.sweep.")
    _check_out(args.out, ("png", "svg", "pdf") if args.sweep else ("png", "svg"))
  except _UsageError as e:
    _exit(e, 2)
  try:
    paths = _main_sweep(args) if args.sweep else _main_workdirs(args)
  except PlotError as e:
    _exit(e, 1)
  print("wrote " + ", ".join(paths))
  return paths


def _exit(e: BaseException, code: int):
  """Exits with `code` after printing `e` as exactly one `error:` line on stderr."""
  message = " ".join(str(e).split("\n")).strip()
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise SystemExit(code)


def cli(argv: Sequence[str] | None = None) -> None:
  """`main`, with Ctrl-C reported as one line and exit status 130 (no traceback)."""
  try:
    main(sys.argv[1:] if argv is None else argv)
  except KeyboardInterrupt:
    print(
      "error: interrupted (Ctrl-C); no partly written plot file is left behind; run "
      "it again to plot.",
      file=sys.stderr,
      flush=True,
    )
    raise SystemExit(130) from None


if __name__ == "__main__":
  cli()
