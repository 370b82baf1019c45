"""What every benchmark's command line shares: checking its flags before any run, and
writing its records."""

from __future__ import annotations

import json
from pathlib import Path

from fedjax_compress import models


def check_json_path(path: str | None, flag: str = "json") -> None:
  """Exits, before any run, if the folder of an output flag (`--json`, `--png`, ...) does
  not exist. Benchmarks write files only where such a flag tells them."""
  if path and not Path(path).resolve().parent.is_dir():
    raise SystemExit(f"error: --{flag}={path}: its folder does not exist; create it first.")


def check_model_names(names: list[str], flag: str = "models") -> None:
  """Exits if a name is not one `models.create_model` knows."""
  if unknown := sorted(set(names) - set(models.model_names())):
    raise SystemExit(f"error: --{flag}: {unknown} unknown; valid: {models.model_names()}.")


def write_json(path: str | None, records, indent: int = 2) -> None:
  """Writes the records to `path` (if given) and says so."""
  if path:
    Path(path).write_text(json.dumps(records, indent=indent))
    print(f"\nwrote {path}")
