"""Plots runs' loss and accuracy against rounds and against cumulative uplink bits.

  python -m experiments.plot --workdirs=/tmp/runs/fedavg,/tmp/runs/comp \
      [--labels="FedAvg,FedAvg + compression"] [--out=plots/accuracy_vs_bits] \
      [--bits=aggregated_bits] [--unit=auto|Mibit|Gibit] [--logx] [--smooth=10]

Reads each workdir's metrics.jsonl (written by experiments.train) and draws a 2x2
figure: loss and accuracy (train: thin line, eval: markers) vs round (top) and vs
cumulative uplink bits (bottom), one colour per workdir, labelled by the workdir's
name or --labels. Writes PREFIX.png and PREFIX.svg and prints one summary line per run.
A mistake (a flag, a workdir, a metrics file, --out's folder, matplotlib missing) prints
one `error: ...` line naming it and its fix, exits non-zero and writes no file.

From Python: `fig = plot_workdirs([...])`, or `plot_runs({label: records})`; both
return a matplotlib Figure built without pyplot, so no global backend is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping, Sequence

METRICS = "metrics.jsonl"
BIT_KEYS = ("aggregated_bits", "broadcasted_bits", "update_bits")
_BIT_NAMES = {"aggregated_bits": "uplink", "broadcasted_bits": "downlink",
              "update_bits": "model-update uplink"}
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
    raise PlotError(f"workdir {workdir!r} does not exist (pass the --workdir of a run of "
                    "experiments.main).")
  path = os.path.join(workdir, METRICS)
  if not os.path.isfile(path):
    raise PlotError(f"{path} not found: {workdir!r} is not the workdir of a run, or the run "
                    "has not finished its first round.")
  records = []
  try:
    with open(path, encoding="utf-8") as f:
      for i, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise PlotError(f"{path}, line {i}: not JSON ({e}); delete or repair that line "
                          "(a run killed mid-write leaves a partial last line).") from None
        if not isinstance(record, dict) or "round" not in record:
          raise PlotError(f"{path}, line {i}: expected an object with a 'round' key; this is "
                          "not a metrics.jsonl written by experiments.train.")
        if bad := [k for k in _NUMERIC if k in record and not (
            _is_number(record[k]) or (record[k] is None and k != "round"))]:
          raise PlotError(f"{path}, line {i}: {bad[0]}={record[bad[0]]!r} is not a number; "
                          "this is not a metrics.jsonl written by experiments.train.")
        records.append(record)
  except UnicodeDecodeError as e:
    raise PlotError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); this is not a "
                    "metrics.jsonl written by experiments.train.") from None
  except OSError as e:
    raise PlotError(f"cannot read {path}: {e.strerror or e}.") from None
  if not records:
    raise PlotError(f"{path} is empty: the run has not finished a round yet.")
  return records


def _series(records, key, x_key, scale=1.0):
  """(xs, ys) over the records that have both keys."""
  pairs = [(r[x_key] / scale, r[key]) for r in records
           if r.get(key) is not None and r.get(x_key) is not None]
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


def plot_runs(runs: Mapping[str, Sequence[Mapping[str, Any]]], *, bits: str = "aggregated_bits",
              unit: str = "auto", logx: bool = False, smooth: int = 1, title: str | None = None):
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
      raise PlotError(f"run {label!r} has no {bits!r} in its metrics; pick another --bits "
                      f"(one of {list(BIT_KEYS)}).")
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
          ax.plot(xs, _smooth(ys, smooth), color=colour, lw=1.0, alpha=0.55,
                  label=f"{label}, train")
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
  fig.suptitle((title or f"Loss and accuracy vs rounds and vs {_BIT_NAMES[bits]} bits")
               + smoothing)
  return fig


def plot_workdirs(workdirs: Sequence[str | os.PathLike], labels: Sequence[str] | None = None,
                  **kwargs):
  """`plot_runs` over workdirs' metrics.jsonl; labels default to the workdirs' names."""
  workdirs = [os.fspath(w) for w in workdirs]
  if not workdirs:
    raise PlotError("no workdirs given.")
  if labels is None:
    labels = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
  if len(labels) != len(workdirs):
    raise PlotError(f"{len(labels)} labels for {len(workdirs)} workdirs; give one label each.")
  if len(set(labels)) != len(labels):
    raise PlotError(f"labels {list(labels)} are not distinct; pass --labels.")
  return plot_runs({label: read_metrics(w) for label, w in zip(labels, workdirs)}, **kwargs)


def save(fig, prefix: str | os.PathLike, formats: Sequence[str] = ("png", "svg")) -> list[str]:
  """Writes PREFIX.png and PREFIX.svg (creating folders); returns the paths.

  Each file is written to a temporary name beside it and renamed into place, so a failed
  or interrupted save leaves no partial file and no earlier plot half-overwritten.
  """
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
      with open(tmp, "wb") as f:
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
  acc = f"eval acc {evals[-1]['eval/accuracy']:.4f} (round {evals[-1]['round']})" if evals else "no eval"
  total = last.get(bits)
  total = f"{total / 2**20:,.2f} Mibit" if total is not None else "n/a"
  return f"{label}: {last['round']} rounds, {acc}, {bits} {total}"


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
  parser.add_argument("--workdirs", default=None,
                      help="comma-separated run workdirs (required)")
  parser.add_argument("--labels", default=None, help="comma-separated curve labels (default: "
                      "the workdirs' names)")
  parser.add_argument("--out", default="accuracy_vs_bits",
                      help="output prefix: writes PREFIX.png and PREFIX.svg; its folder must "
                      "exist")
  parser.add_argument("--bits", default="aggregated_bits", choices=BIT_KEYS,
                      help="cumulative counter for the x axis (default: the uplink)")
  parser.add_argument("--unit", default="auto", choices=["auto", *UNITS])
  parser.add_argument("--logx", action="store_true", help="log scale for the bits axis")
  parser.add_argument("--smooth", type=int, default=1,
                      help="moving-average window (rounds) for the train curves; 1: none")
  parser.add_argument("--title", default=None)
  return parser


def _check_out(prefix: str) -> None:
  """Raises _UsageError unless PREFIX.png/.svg can be written: the folder exists, is writable."""
  if not prefix:
    raise _UsageError("--out is empty; pass a file prefix such as --out=plots/accuracy_vs_bits.")
  if prefix.endswith(("/", os.sep)):
    raise _UsageError(f"--out={prefix} names a folder; pass a file prefix inside it, such as "
                      f"--out={os.path.join(prefix, 'accuracy_vs_bits')}.")
  folder = os.path.dirname(prefix) or "."
  if not os.path.isdir(folder):
    what = "is not a folder" if os.path.exists(folder) else "does not exist"
    raise _UsageError(f"--out={prefix}: folder {folder!r} {what}; create it first or pick "
                      "another --out.")
  import tempfile
  try:  # os.access says yes to root on read-only mounts; this probe leaves no file behind.
    if not os.access(folder, os.W_OK | os.X_OK):
      raise PermissionError(13, "Permission denied")
    tempfile.TemporaryFile(dir=folder).close()
  except OSError as e:
    raise _UsageError(f"--out={prefix}: folder {folder!r} is not writable ({e.strerror or e}); "
                      "pick another --out.") from None
  for fmt in ("png", "svg"):
    if os.path.isdir(f"{prefix}.{fmt}"):
      raise _UsageError(f"--out={prefix}: {prefix}.{fmt} is a folder; pick another --out.")


def main(argv: Sequence[str] | None = None) -> list[str]:
  """The command line: writes the plot and returns its paths.

  Every mistake (flags, workdirs, metrics files, --out) raises SystemExit with one
  `error: ...` line, before any file is written; exit status 2 for flag mistakes, 1 for
  the rest.
  """
  try:
    args = _parser().parse_args(argv)
    if args.workdirs is None:
      raise _UsageError("--workdirs is required: pass the runs' workdirs, comma-separated, "
                        "e.g. --workdirs=/tmp/runs/fedavg,/tmp/runs/comp.")
    workdirs, labels = _split(args.workdirs), _split(args.labels)
    if not workdirs:
      raise _UsageError(f"--workdirs={args.workdirs!r} names no workdir; pass the runs' "
                        "workdirs, comma-separated.")
    if labels is not None and len(labels) != len(workdirs):
      raise _UsageError(f"--labels gives {len(labels)} labels for {len(workdirs)} workdirs; "
                        "give one label per workdir, comma-separated, in the same order.")
    if args.smooth < 1:
      raise _UsageError(f"--smooth={args.smooth}: the moving-average window must be at least "
                        "1 (1: no smoothing).")
    _check_out(args.out)
  except _UsageError as e:
    _exit(e, 2)
  try:
    if labels is None:
      labels = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
    if len(set(labels)) != len(labels):
      raise PlotError(f"labels {labels} are not distinct; pass --labels with one distinct "
                      "label per workdir.")
    runs = {label: read_metrics(w) for label, w in zip(labels, workdirs)}
    try:
      import matplotlib
    except ImportError as e:
      raise PlotError(f"matplotlib is not installed ({e}); install the plot extra: "
                      "pip install -e '.[plot]'.") from None
    matplotlib.use("Agg")
    fig = plot_runs(runs, bits=args.bits, unit=args.unit, logx=args.logx, smooth=args.smooth,
                    title=args.title)
    try:
      paths = save(fig, args.out)
    except OSError as e:
      raise PlotError(f"cannot write {args.out}.png/.svg: {e.strerror or e}; pick another "
                      "--out.") from None
  except PlotError as e:
    _exit(e, 1)
  for label, records in runs.items():
    print(summary(label, records, args.bits))
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
    print("error: interrupted (Ctrl-C); no partly written plot file is left behind; run "
          "it again to plot.", file=sys.stderr, flush=True)
    raise SystemExit(130) from None


if __name__ == "__main__":
  cli()
