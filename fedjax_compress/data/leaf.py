"""LEAF's FEMNIST JSON layout: <data_dir>/{train,test}/*.json[.gz], one client per writer.

Each file: {"users": [...], "num_samples": [...],
            "user_data": {uid: {"x": [[784 floats]], "y": [ints 0..61]}}}.
Pixels are in [0, 1] with 1.0 = white background, as in TFF's EMNIST. A writer
found in several files gets its examples concatenated, in file-name order.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

import numpy as np

from fedjax_compress.data.checks import client_arrays
from fedjax_compress.data.federated import DataError, FederatedData

NUM_CLASSES = 62  # 0-9 digits, 10-35 'A'-'Z', 36-61 'a'-'z'.
_LAYOUT = "<data_dir>/train/*.json[.gz] and <data_dir>/test/*.json[.gz]"


def load_leaf(
  data_dir: str | os.PathLike, split: str, *, only_digits: bool = True
) -> FederatedData:
  """Loads one split of a LEAF FEMNIST folder.

  Args:
    data_dir: the folder holding `train/` and `test/` (or one of those
      folders itself, when its name is `split`).
    split: 'train' or 'test'.
    only_digits: keep labels < 10 (num_classes 10), dropping writers left empty.
  """
  if split not in ("train", "test"):
    raise DataError(f"LEAF split must be 'train' or 'test', not {split!r}.")
  folder = _split_dir(Path(data_dir).expanduser(), split)
  files = sorted(p for p in folder.iterdir() if p.name.endswith((".json", ".json.gz")))
  if not files:
    raise DataError(f"{folder}: no *.json or *.json.gz files; expected LEAF's layout {_LAYOUT}.")
  parts: dict[str, list] = {}
  for path in files:
    for uid, x, y in _users(_read_json(path), path):
      parts.setdefault(uid, []).append(client_arrays(x, y, NUM_CLASSES, f"{path}, user {uid!r}"))
  clients = {uid: _concat(p) for uid, p in parts.items()}
  data = FederatedData(clients, NUM_CLASSES, str(folder))
  return data.only_digits() if only_digits else data


def _split_dir(data_dir: Path, split: str) -> Path:
  if (data_dir / split).is_dir():
    return data_dir / split
  if data_dir.name == split and data_dir.is_dir():
    return data_dir
  if not data_dir.exists():
    raise DataError(f"LEAF data folder {data_dir} does not exist.")
  raise DataError(f"{data_dir}: no '{split}/' folder; expected LEAF's layout {_LAYOUT}.")


def _read_json(path: Path) -> dict:
  try:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
      return json.load(f)
  except (OSError, EOFError, zlib.error, ValueError) as e:  # ValueError: bad JSON/UTF-8.
    raise DataError(
      f"{path}: cannot read as LEAF JSON ({type(e).__name__}: {e}); "
      "the file is truncated or corrupt."
    ) from e


def _users(doc, path: Path):
  """Yields (uid, x, y) for each user in one LEAF document."""
  if not isinstance(doc, dict) or not isinstance(doc.get("user_data"), dict):
    raise DataError(f"{path}: not a LEAF file: no 'user_data' object.")
  user_data = doc["user_data"]
  users = doc.get("users", list(user_data))
  counts = doc.get("num_samples")
  if counts is not None and len(counts) != len(users):
    raise DataError(f"{path}: {len(users)} users but {len(counts)} num_samples entries.")
  for k, uid in enumerate(users):
    entry = user_data.get(uid)
    if not isinstance(entry, dict) or "x" not in entry or "y" not in entry:
      raise DataError(f"{path}, user {uid!r}: no user_data entry with 'x' and 'y'.")
    if counts is not None and counts[k] != len(entry["y"]):
      raise DataError(
        f"{path}, user {uid!r}: num_samples says {counts[k]} but "
        f"{len(entry['y'])} labels are present."
      )
    yield str(uid), entry["x"], entry["y"]


def _concat(parts: list) -> tuple[np.ndarray, np.ndarray]:
  if len(parts) == 1:
    return parts[0]
  return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
