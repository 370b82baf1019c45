"""Federated Shakespeare (715 speaking roles) as next-character sequences.

Three on-disk layouts, picked from what `data_dir` holds (first match wins):
  * TFF's SQLite: `shakespeare.sqlite` or `shakespeare.sqlite.lzma` (TFF's current
    `tff.simulation.datasets.shakespeare`, file `tff-datasets-public/shakespeare.sqlite.lzma`;
    `sql_client_data`'s schema): table `examples(split_name, client_id,
    serialized_example_proto)`, splits 'train' and 'test', each row a tf.train.Example
    with one bytes feature `snippets`. An .lzma is decompressed into the cache.
  * TFF's legacy h5: `shakespeare_{train,test}.h5` with `/examples/<client>/snippets`, a
    1-D array of byte strings.
  * LEAF's JSON: `{train,test}/*.json[.gz]`, `{"users": [...], "user_data": {u: {"x":
    [80-char strings], "y": [the next char]}}}`.
TFF snippets become sequences as TFF's Shakespeare task makes them (`text.
snippets_to_sequences`: BOS + characters + EOS, padded to chunks of seq_len + 1, x/y
shifted by one). LEAF examples are already windows with one target each (LEAF's task:
the character after 80 characters); each becomes one sequence x = the window's ids and y
= pad everywhere but the last position, which holds the next character's id. LEAF's
task is thus kept as LEAF defines it (one scored prediction per example, no BOS/EOS),
not turned into dense prediction over its heavily overlapping windows.

Every layout yields `FederatedData` with x, y int32 [n, seq_len], `tokens` =
`text.SHAKESPEARE_TOKENS` and num_classes 90.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable

import numpy as np

from fedjax_compress.data import download as dl
from fedjax_compress.data import text
from fedjax_compress.data.example_proto import ProtoError, one_bytes_value
from fedjax_compress.data.federated import DataError, FederatedData
from fedjax_compress.data.leaf import _read_json, _users

SPLITS = ("train", "test")
SQLITE_NAME = "shakespeare.sqlite"
LZMA_NAME = SQLITE_NAME + ".lzma"
FEATURE = "snippets"


def h5_name(split: str) -> str:
  """TFF's legacy file name, e.g. 'shakespeare_train.h5'."""
  return f"shakespeare_{split}.h5"


def load_shakespeare(
  split: str,
  *,
  data_dir: str | os.PathLike | None = None,
  seq_len: int = text.SEQUENCE_LENGTH,
  cache_dir: str | os.PathLike | None = None,
) -> FederatedData:
  """Loads one split of federated Shakespeare from `data_dir` (see the module docstring).

  Args:
    split: 'train' or 'test'.
    data_dir: a folder with `shakespeare.sqlite[.lzma]`, `shakespeare_{split}.h5` or
      LEAF's `{split}/*.json[.gz]`.
    seq_len: the length of x and y (TFF and Reddi et al.: 80). LEAF's windows have a
      fixed length: it must equal that length.
    cache_dir: where an .lzma is decompressed; default $FEDJAX_COMPRESS_CACHE or
      ~/.cache/fedjax_compress.
  """
  if split not in SPLITS:
    raise DataError(f"Shakespeare split must be 'train' or 'test', not {split!r}.")
  if seq_len < 1:
    raise DataError(f"seq_len={seq_len} must be a positive integer (TFF uses 80).")
  if data_dir is None:
    raise DataError(
      f"the 'shakespeare' dataset needs data_dir=: a folder with {LZMA_NAME} "
      f"(TFF, tff-datasets-public), {h5_name(split)} (TFF legacy) or LEAF's "
      f"{split}/*.json."
    )
  folder = Path(data_dir).expanduser()
  if not folder.is_dir():
    raise DataError(
      f"Shakespeare data_dir {folder} is not a folder; pass the folder that holds the data files."
    )
  if (folder / SQLITE_NAME).exists():
    clients = read_sqlite(folder / SQLITE_NAME, split, seq_len)
    source = f"{folder / SQLITE_NAME}:{split}"
  elif (folder / LZMA_NAME).exists():
    path = dl.decompressed(folder / LZMA_NAME, dl.resolve_cache_dir(cache_dir) / SQLITE_NAME)
    clients, source = read_sqlite(path, split, seq_len), f"{path}:{split}"
  elif (folder / h5_name(split)).exists():
    clients, source = read_h5(folder / h5_name(split), seq_len), str(folder / h5_name(split))
  elif _leaf_files(folder, split):
    clients, source = read_leaf(_leaf_files(folder, split), seq_len), str(folder / split)
  else:
    raise DataError(
      f"no Shakespeare data in {folder}: expected {SQLITE_NAME}, {LZMA_NAME} "
      f"(TFF), {h5_name(split)} (TFF legacy) or {split}/*.json[.gz] (LEAF)."
    )
  tokens = text.SHAKESPEARE_TOKENS
  return FederatedData(clients, tokens.vocab_size, source, tokens).validate()


def _sequences(snippets: Iterable[bytes], seq_len: int, where: str):
  x, y = text.snippets_to_sequences(list(snippets), seq_len)
  if not len(x):
    raise DataError(f"{where}: the client has no snippets; drop it or fix the file.")
  return x, y


# --- TFF SQLite -------------------------------------------------------------------------


def read_sqlite(path: Path, split: str, seq_len: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Client id -> (x, y) from TFF's SQLite file; a client's snippets in row order."""
  try:
    con = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
  except sqlite3.Error as e:
    raise DataError(f"{path}: cannot open as SQLite ({e}).") from e
  snippets: dict[str, list[bytes]] = {}
  try:
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "examples" not in tables:
      raise DataError(
        f"{path}: no 'examples' table (found {sorted(tables)}); is this TFF's {SQLITE_NAME}?"
      )
    rows = con.execute(
      "SELECT client_id, serialized_example_proto FROM examples "
      "WHERE split_name = ? ORDER BY rowid",
      (split,),
    )
    for cid, blob in rows:
      snippets.setdefault(cid, []).append(_snippet(blob, path, split, cid))
    if not snippets:
      found = [r[0] for r in con.execute("SELECT DISTINCT split_name FROM examples")]
      raise DataError(f"{path}: no split {split!r} in table examples; found {found}.")
  except sqlite3.DatabaseError as e:
    raise DataError(
      f"{path}: not a readable SQLite database ({e}); the file is truncated "
      "or corrupt. Delete it and fetch it again."
    ) from e
  finally:
    con.close()
  return {cid: _sequences(s, seq_len, f"{path}, client {cid!r}") for cid, s in snippets.items()}


def _snippet(blob: bytes, path: Path, split: str, cid: str) -> bytes:
  try:
    return one_bytes_value(blob, FEATURE, f"{path}, split {split!r}, client {cid!r}")
  except ProtoError as e:
    raise DataError(str(e)) from None


# --- TFF legacy h5 ----------------------------------------------------------------------


def read_h5(path: Path, seq_len: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Client id -> (x, y) from a legacy TFF h5 file: examples/<client>/snippets."""
  import h5py  # Deferred: only this layout needs it.

  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise DataError(
      f"{path}: cannot open as HDF5 ({e}); the file is truncated or not an h5 file."
    ) from e
  clients = {}
  with f:
    group = f.get("examples")
    if not isinstance(group, h5py.Group):
      raise DataError(f"{path}: no 'examples' group; found {sorted(f.keys())}.")
    for cid in group:
      where = f"{path}, client {cid!r}"
      try:
        raw = group[cid][FEATURE][()]
      except (KeyError, OSError, ValueError, TypeError, RuntimeError) as e:
        raise DataError(f"{where}: cannot read {FEATURE!r} ({e}).") from e
      if raw.dtype.kind not in "SO":
        raise DataError(f"{where}: {FEATURE!r} has dtype {raw.dtype}, expected byte strings.")
      clients[cid] = _sequences((bytes(s) for s in np.atleast_1d(raw)), seq_len, where)
  if not clients:
    raise DataError(f"{path}: the 'examples' group holds no clients.")
  return clients


# --- LEAF JSON --------------------------------------------------------------------------


def _leaf_files(folder: Path, split: str) -> list[Path]:
  sub = folder / split
  if not sub.is_dir():
    return []
  return sorted(p for p in sub.iterdir() if p.name.endswith((".json", ".json.gz")))


def leaf_sequences(
  windows: list[str], next_chars: list[str], seq_len: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
  """LEAF examples -> (x, y) [n, seq_len]: x the window's character ids, y pad but its
  last position, the next character's id."""
  tokens = text.SHAKESPEARE_TOKENS
  n = len(windows)
  if n != len(next_chars):
    raise DataError(f"{where}: {n} x windows but {len(next_chars)} y characters.")
  x = np.zeros((n, seq_len), np.int32)
  y = np.full((n, seq_len), tokens.pad, np.int32)
  for i, (window, nxt) in enumerate(zip(windows, next_chars)):
    if not isinstance(window, str) or len(window) != seq_len:
      raise DataError(
        f"{where}, example {i}: x has {len(window)} characters but "
        f"seq_len={seq_len}; LEAF's windows are 80 characters: set seq_len to "
        f"their length."
      )
    if not isinstance(nxt, str) or len(nxt) != 1:
      raise DataError(f"{where}, example {i}: y should be one character, got {nxt!r}.")
    x[i] = text.char_ids(window)
    y[i, -1] = text.char_ids(nxt)[0]
  return x, y


def read_leaf(files: list[Path], seq_len: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Client id -> (x, y) from LEAF Shakespeare JSON files (a user in several files gets
  its examples concatenated, in file-name order)."""
  parts: dict[str, list] = {}
  for path in files:
    for uid, xs, ys in _users(_read_json(path), path):
      parts.setdefault(uid, []).append(leaf_sequences(xs, ys, seq_len, f"{path}, user {uid!r}"))
  return {
    uid: (np.concatenate([x for x, _ in p]), np.concatenate([y for _, y in p]))
    for uid, p in parts.items()
  }
