"""TFF's federated EMNIST (3,383 writers digits-only / 3,400 with letters).

Two on-disk layouts, both as TensorFlow Federated published them:
  * current: `emnist_all.sqlite.lzma` from TFF's bucket; SQLite tables
    `examples(split_name, client_id, serialized_example_proto)` and
    `client_metadata(client_id, split_name, num_examples)`, splits
    `digits_only_{train,test}` and `all_{train,test}`; each row a serialized
    tf.train.Example with `pixels` (784 floats) and `label` (one int64).
  * legacy: `fed_emnist_digitsonly_{train,test}.h5` / `fed_emnist_{train,test}.h5`
    with `examples/<client_id>/{pixels [n,28,28], label [n]}`.
Pixels are float32 in [0, 1] with 1.0 = white background, as TFF stores them.

`read_sqlite` reads a whole split in one streaming query and parses it with the
hand-written decoder (`example_proto`), which beat the protobuf runtime; its speed
on a generated file: `python -m benchmarks.tff_emnist_read` (benchmarks/RESULTS.md,
"TFF EMNIST reader").
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import cast

import numpy as np

from fedjax_compress.data import download as dl
from fedjax_compress.data.checks import PIXELS, client_arrays
from fedjax_compress.data.example_proto import ProtoError, parse_example
from fedjax_compress.data.federated import DataError, FederatedData

BASE_URL_ENV = "FEDJAX_COMPRESS_TFF_BASE_URL"
TFF_BASE_URL = "https://storage.googleapis.com/tff-datasets-public/"
SQLITE_NAME = "emnist_all.sqlite"
LZMA_NAME = SQLITE_NAME + ".lzma"

# TFF's loader verifies no hash for this file. This one (170,507,172 bytes;
# decompressed 4,708,990,976 bytes) was recorded by a third party that downloaded it
# in 2026. Since TFF does not publish it, a mismatch only warns; the SQLite structure
# (tables, splits) is verified when the file is opened either way.
# (The legacy archives had TFF-published sha256s: fed_emnist_digitsonly.tar.bz2
# 55333deb8546765427c385710ca5e7301e16f4ed8b60c1dc5ae224b42bd5b14b and
# fed_emnist.tar.bz2 fe1ed5a502cea3a952eb105920bff8cffb32836b5173cb18a57a32c3606f3ea0.)
_REFERENCE_SHA256 = {
  TFF_BASE_URL + LZMA_NAME: "c3aaf91b4cf4e69d53d81627ad119eccdc878ff906f68e66063ff10f67faad48",
}
_TABLES = ("examples", "client_metadata")


def load_tff_emnist(
  split: str,
  *,
  only_digits: bool = True,
  data_dir: str | os.PathLike | None = None,
  cache_dir: str | os.PathLike | None = None,
  download: bool = True,
  base_url: str | None = None,
) -> FederatedData:
  """Loads one split of TFF's federated EMNIST.

  Args:
    split: 'train' or 'test'.
    only_digits: the 10-class digits-only dataset (TFF's default) or all 62.
    data_dir: folder holding `emnist_all.sqlite[.lzma]` or the legacy h5 files
      (also looked for in `data_dir/datasets/`); when given, only it is used.
      An .lzma is decompressed into the cache, and its sha256 is recorded
      next to it (if writable) so later corruption is caught.
    cache_dir: download cache; default $FEDJAX_COMPRESS_CACHE or
      ~/.cache/fedjax_compress.
    download: fetch `emnist_all.sqlite.lzma` (~170 MB, ~4.7 GB decompressed)
      into the cache when it is not there.
    base_url: where to fetch from; default $FEDJAX_COMPRESS_TFF_BASE_URL or
      TFF's bucket.

  Returns:
    FederatedData with num_classes 10 (only_digits) or 62.
  """
  if split not in ("train", "test"):
    raise DataError(f"TFF EMNIST split must be 'train' or 'test', not {split!r}.")
  num_classes = 10 if only_digits else 62
  path = _locate(split, only_digits, data_dir, cache_dir, download, base_url)
  if path.suffix == ".h5":
    return read_h5(path, num_classes)
  return read_sqlite(path, sql_split_name(split, only_digits), num_classes)


def sql_split_name(split: str, only_digits: bool) -> str:
  """The SQLite split name, e.g. 'digits_only_train'."""
  return f"{'digits_only' if only_digits else 'all'}_{split}"


def h5_name(split: str, only_digits: bool) -> str:
  """The legacy h5 file name, e.g. 'fed_emnist_digitsonly_train.h5'."""
  return f"fed_emnist{'_digitsonly' if only_digits else ''}_{split}.h5"


# --- finding the file -----------------------------------------------------------


def _locate(split, only_digits, data_dir, cache_dir, download, base_url) -> Path:
  """data_dir if given; else the cache; else a download into the cache."""
  cache = dl.resolve_cache_dir(cache_dir)
  wanted = f"{SQLITE_NAME}, {LZMA_NAME} or {h5_name(split, only_digits)}"
  if data_dir is not None:
    found = _find_local(Path(data_dir).expanduser(), split, only_digits, cache)
    if found is None:
      raise DataError(
        f"no TFF EMNIST file in {data_dir}: expected {wanted} there "
        f"(or in {Path(data_dir) / 'datasets'})."
      )
    return found
  found = _find_local(cache, split, only_digits, cache)
  if found is not None:
    return found
  url = (base_url or os.environ.get(BASE_URL_ENV) or TFF_BASE_URL).rstrip("/") + "/" + LZMA_NAME
  return dl.fetch_sqlite(
    "TFF EMNIST",
    url,
    cache,
    SQLITE_NAME,
    download_allowed=download,
    wanted=wanted,
    reference_sha256=_REFERENCE_SHA256.get(url),
  )


def _find_local(folder: Path, split: str, only_digits: bool, cache: Path) -> Path | None:
  """The first of emnist_all.sqlite, emnist_all.sqlite.lzma, legacy h5 in `folder`."""
  sqlite_path, lzma_path = folder / SQLITE_NAME, folder / LZMA_NAME
  if sqlite_path.exists() and not (folder == cache and lzma_path.exists()):
    return sqlite_path  # Placed by hand: there is no source to check it against.
  if lzma_path.exists():
    # Decompress into the cache: data_dir may be read-only. In the cache, this
    # also re-checks the download and rebuilds a damaged .sqlite.
    return dl.decompressed(lzma_path, cache / SQLITE_NAME)
  for d in (folder, folder / "datasets"):
    if (d / h5_name(split, only_digits)).exists():
      return d / h5_name(split, only_digits)
  return None


# --- SQLite ---------------------------------------------------------------------


def read_sqlite(path: Path, split_name: str, num_classes: int) -> FederatedData:
  """Reads one split of a TFF SQLite file with one streaming query."""
  try:
    con = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
  except sqlite3.Error as e:
    raise DataError(f"{path}: cannot open as SQLite ({e}).") from e
  try:
    counts = _client_counts(con, path, split_name)
    pixels, labels, spans = _read_examples(con, path, split_name, counts)
  except sqlite3.DatabaseError as e:
    raise DataError(
      f"{path}: not a readable SQLite database ({e}); the file is truncated "
      "or corrupt. Delete it and fetch it again."
    ) from e
  finally:
    con.close()
  x = np.frombuffer(pixels, dtype="<f4").reshape(-1, PIXELS)
  clients = {
    cid: client_arrays(
      x[a:b], labels[a:b], num_classes, f"{path}, split {split_name!r}, client {cid!r}"
    )
    for cid, (a, b) in spans.items()
  }
  return FederatedData(clients, num_classes, f"{path}:{split_name}")


def _client_counts(con: sqlite3.Connection, path: Path, split_name: str) -> dict[str, int]:
  tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
  missing = [t for t in _TABLES if t not in tables]
  if missing:
    raise DataError(
      f"{path}: missing table(s) {missing}; found {sorted(tables)}. "
      "Is this TFF's emnist_all.sqlite?"
    )
  counts = dict(
    con.execute(
      "SELECT client_id, num_examples FROM client_metadata WHERE split_name = ? ORDER BY client_id",
      (split_name,),
    )
  )
  if not counts:
    splits = [r[0] for r in con.execute("SELECT DISTINCT split_name FROM client_metadata")]
    raise DataError(f"{path}: no split {split_name!r} in client_metadata; found {splits}.")
  empty = [cid for cid, n in counts.items() if not n or n < 0]
  if empty:
    raise DataError(
      f"{path}, split {split_name!r}, client {empty[0]!r}: client_metadata "
      f"lists {counts[empty[0]]} examples ({len(empty)} such clients)."
    )
  return counts


def _read_examples(con, path, split_name, counts):
  """Streams the split once, filling one preallocated buffer by client.

  Rows are grouped here rather than with ORDER BY client_id: without an index
  SQLite would sort gigabytes of blobs in a temporary B-tree first.
  """
  spans, cursor, ends, total = {}, {}, {}, 0
  for cid, n in counts.items():
    spans[cid] = (total, total + n)
    cursor[cid], ends[cid] = total, total + n
    total += n
  nbytes = PIXELS * 4
  pixels = bytearray(total * nbytes)
  labels = [0] * total  # A list: item assignment is cheaper than into numpy.
  rows = con.execute(
    "SELECT client_id, serialized_example_proto FROM examples WHERE split_name = ?", (split_name,)
  )
  for cid, blob in rows:
    i = cursor.get(cid)
    if i is None or i == ends[cid]:
      raise DataError(
        f"{path}, split {split_name!r}, client {cid!r}: more examples than the "
        f"{counts.get(cid, 0)} listed in client_metadata."
      )
    raw, labels[i] = _pixels_and_label(blob, path, split_name, cid, i - spans[cid][0])
    pixels[i * nbytes : (i + 1) * nbytes] = raw
    cursor[cid] = i + 1
  for cid, (a, b) in spans.items():
    if cursor[cid] != b:
      raise DataError(
        f"{path}, split {split_name!r}, client {cid!r}: {cursor[cid] - a} "
        f"examples but client_metadata lists {b - a}."
      )
  return pixels, np.array(labels, np.int64), spans


def _pixels_and_label(blob, path, split_name, cid, index) -> tuple[bytes, int]:
  where = f"{path}, split {split_name!r}, client {cid!r}, example {index}"
  try:
    features = parse_example(blob)
  except ProtoError as e:
    raise DataError(f"{where}: not a valid tf.train.Example ({e}).") from e
  kind, raw = features.get("pixels", (None, b""))
  if kind != "float" or len(raw) != PIXELS * 4:
    count = len(raw) // 4 if kind == "float" else 0
    raise DataError(
      f"{where}: feature 'pixels' has {count} floats ({kind or 'missing'}), "
      f"expected {PIXELS} (28x28)."
    )
  kind, label = features.get("label", (None, ()))
  if kind != "int64" or len(label) != 1:
    raise DataError(f"{where}: feature 'label' should be one int64, got {kind} {label!r}.")
  return cast(bytes, raw), label[0]  # a 'float' feature's value is its raw bytes


# --- legacy h5 ------------------------------------------------------------------


def read_h5(path: Path, num_classes: int) -> FederatedData:
  """Reads a legacy TFF h5 file: examples/<client_id>/{pixels, label}."""
  import h5py  # Deferred: only this legacy layout needs it.

  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise DataError(
      f"{path}: cannot open as HDF5 ({e}); the file is truncated or not an "
      "h5 file. Delete it and fetch it again."
    ) from e
  with f:
    group = f.get("examples")
    if not isinstance(group, h5py.Group):
      raise DataError(f"{path}: no 'examples' group; found {sorted(f.keys())}.")
    clients = {}
    for cid in group:
      where = f"{path}, client {cid!r}"
      try:
        x, y = group[cid]["pixels"][()], group[cid]["label"][()]
      except (KeyError, OSError, ValueError, TypeError, RuntimeError) as e:
        raise DataError(f"{where}: cannot read pixels/label ({e}).") from e
      clients[cid] = client_arrays(x, y, num_classes, where)
  if not clients:
    raise DataError(f"{path}: the 'examples' group holds no clients.")
  return FederatedData(clients, num_classes, str(path))
