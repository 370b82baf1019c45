"""A run's workdir: written only where the user asked, never silently overwritten.

Rules (each is a test in tests/experiments/test_workdir_safety.py):
- A workdir that cannot be written (a file, a read-only folder) is refused before any
  data loads.
- A workdir holding a run with another config is refused, showing the difference,
  unless the difference cannot change results (`RESUMABLE` keys) or the user passes
  `--allow_config_change` (continue this run with the new config: the earlier config
  and metrics are kept beside the new ones) or `--restart` (the earlier run is moved
  aside to WORKDIR.previous-N, never deleted).
- A workdir whose checkpoints all fail to restore is refused and left as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ml_collections

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# Keys that may change between the runs of one workdir: they do not change results
# (every strategy computes the same rounds; cadences only choose what is written when).
RESUMABLE = (
  "rounds",
  "strategy",
  "chunk_size",
  "client_threads",
  "eval_every",
  "log_every",
  "checkpoint_every",
  "keep_checkpoints",
)


class WorkdirError(ValueError):
  """The workdir cannot be used as asked; the message says why and the fix."""


def fixes(workdir: str) -> str:
  """The ways out of a refused workdir, for error messages."""
  return (
    f"Use another --workdir, or pass --restart to move the earlier run to "
    f"{next_free(workdir)} and start over"
  )


def check_writable(workdir: str) -> None:
  """Creates `workdir` if needed; raises `WorkdirError` if files cannot be written there."""
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"--workdir={workdir} is a file, not a folder: pass a folder path.")
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check"):
      pass
  except OSError as e:
    raise WorkdirError(
      f"--workdir={workdir} cannot be written ({e.strerror or e}): pass a folder you can write to."
    ) from e


def has_run(workdir: str) -> bool:
  """Whether `workdir` holds files of an earlier run."""
  path = Path(workdir)
  return path.is_dir() and any(path.iterdir())


def next_free(workdir: str) -> str:
  """WORKDIR.previous-N with the first N not yet taken."""
  base = str(Path(workdir))
  n = 1
  while os.path.exists(f"{base}.previous-{n}"):
    n += 1
  return f"{base}.previous-{n}"


def move_aside(workdir: str) -> str:
  """Renames the earlier run's folder to WORKDIR.previous-N and returns that path."""
  target = next_free(workdir)
  try:
    os.rename(workdir, target)
  except OSError as e:
    raise WorkdirError(
      f"--restart: cannot move {workdir} to {target} ({e.strerror or e}); "
      f"move it yourself or use another --workdir."
    ) from e
  return target


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"aggregator": {"name": "mean"}} -> {"aggregator.name": "mean"}."""
  out = {}
  for key, value in config.items():
    if isinstance(value, dict):
      out.update(flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def as_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """A config as the JSON `config.json` holds."""
  return json.loads(config.to_json_best_effort())


def earlier_config(workdir: str) -> dict[str, Any] | None:
  """The config of the run in `workdir`, or None if there is none."""
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(
      f"{path} cannot be read ({e}); the run there is left as it is. {fixes(workdir)}."
    ) from e


def changes(before: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
  """'key: old -> new' for every key that differs and can change results.

  A key absent from `before` and at its default now is the behaviour that run had (a
  key added to the project since).
  """
  before, now, defaults = flat(before), flat(now), flat(defaults)
  out = []
  for key in sorted(set(before) | set(now)):
    if before.get(key) == now.get(key) or key.split(".")[0] in RESUMABLE:
      continue
    if key not in before and key in defaults and now.get(key) == defaults[key]:
      continue
    out.append(f"{key}: {before.get(key, '(unset)')!r} -> {now.get(key, '(unset)')!r}")
  return out


def keep_copy(workdir: str, name: str) -> str | None:
  """Copies WORKDIR/name to the first free WORKDIR/stem.N.suffix; returns its name."""
  source = Path(workdir) / name
  if not source.exists():
    return None
  n = 1
  while (target := source.with_name(f"{source.stem}.{n}{source.suffix}")).exists():
    n += 1
  shutil.copy2(source, target)
  return target.name


def complete_records(path: Path) -> tuple[list[dict[str, Any]], int]:
  """(the records of a metrics.jsonl up to its first broken line, its number of lines)."""
  if not path.exists():
    return [], 0
  lines = path.read_text().splitlines()
  records = []
  for line in lines:
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:  # a line cut short by a kill
      break
  return records, len(lines)


def metric_records(workdir: str) -> int:
  """The number of complete records in WORKDIR/metrics.jsonl."""
  return len(complete_records(Path(workdir) / METRICS_FILE)[0])


def truncate_metrics(workdir: str, last_round: int) -> list[dict[str, Any]]:
  """Keeps the records of rounds <= last_round: later ones are recomputed identically."""
  path = Path(workdir) / METRICS_FILE
  records, num_lines = complete_records(path)
  kept = [r for r in records if r["round"] <= last_round]
  if len(kept) < num_lines:
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
  return kept
