"""Writers of small files in the real federated-EMNIST formats, for tests.

Formats: TFF's SQLite (`emnist_all.sqlite[.lzma]`), TFF's legacy h5
(`fed_emnist[_digitsonly]_{train,test}.h5`) and LEAF's JSON (`.json[.gz]`).
The tf.train.Example bytes come from the protobuf runtime (not from our own
decoder), built from a hand-written descriptor so TensorFlow is not imported.

Import as `from tests.data import fixtures` (run pytest from the repo root).
"""

from __future__ import annotations

import functools
import gzip
import json
import lzma
import sqlite3
from pathlib import Path
from typing import Mapping

import numpy as np

Clients = Mapping[str, tuple[np.ndarray, np.ndarray]]  # cid -> (x [n,28,28], y [n])


@functools.lru_cache(maxsize=None)
def example_class():
  """The tf.train.Example message class, without importing TensorFlow."""
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

  T = descriptor_pb2.FieldDescriptorProto
  f = descriptor_pb2.FileDescriptorProto(
    name="fedjax_compress_test_example.proto", package="tensorflow", syntax="proto3"
  )

  def message(name, *fields, options=None):
    m = f.message_type.add(name=name)
    for field_name, number, ftype, label, type_name, oneof in fields:
      fd = m.field.add(name=field_name, number=number, type=ftype, label=label)
      if type_name:
        fd.type_name = type_name
      if oneof is not None:
        fd.oneof_index = oneof
    if options:
      m.options.CopyFrom(options)
    return m

  opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
  message("BytesList", ("value", 1, T.TYPE_BYTES, rep, None, None))
  message("FloatList", ("value", 1, T.TYPE_FLOAT, rep, None, None))
  message("Int64List", ("value", 1, T.TYPE_INT64, rep, None, None))
  feature = message(
    "Feature",
    ("bytes_list", 1, T.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
    ("float_list", 2, T.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
    ("int64_list", 3, T.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0),
  )
  feature.oneof_decl.add(name="kind")
  features = message(
    "Features", ("feature", 1, T.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", None)
  )
  entry = features.nested_type.add(name="FeatureEntry")
  entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=opt)
  entry.field.add(
    name="value", number=2, type=T.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature"
  )
  entry.options.map_entry = True
  message("Example", ("features", 1, T.TYPE_MESSAGE, opt, ".tensorflow.Features", None))

  pool = descriptor_pool.DescriptorPool()  # Private: never clashes with TF's.
  pool.Add(f)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def example_bytes(pixels: np.ndarray, label: int) -> bytes:
  """A serialized tf.train.Example with TFF's features `pixels` and `label`."""
  ex = example_class()()
  ex.features.feature["pixels"].float_list.value.extend(
    np.asarray(pixels, np.float32).ravel().tolist()
  )
  ex.features.feature["label"].int64_list.value.append(int(label))
  return ex.SerializeToString()


# --- hand encoding, for cases the protobuf runtime never writes -------------


def _varint(v: int) -> bytes:
  v &= (1 << 64) - 1
  out = bytearray()
  while v >= 0x80:
    out.append((v & 0x7F) | 0x80)
    v >>= 7
  out.append(v)
  return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example_bytes_unpacked(pixels: np.ndarray, label: int, extra: bytes = b"") -> bytes:
  """Like `example_bytes`, but floats and ints unpacked, label entry first,
  and `extra` (e.g. an unknown field) appended inside Features."""
  floats = b"".join(
    b"\x0d" + np.float32(v).tobytes() for v in np.asarray(pixels, np.float32).ravel()
  )
  ints = b"\x08" + _varint(label)
  entry = lambda key, feat: _len_field(1, _len_field(1, key.encode()) + _len_field(2, feat))
  features = entry("label", _len_field(3, ints)) + entry("pixels", _len_field(2, floats))
  return _len_field(1, features + extra)


# --- data ---------------------------------------------------------------------


def make_clients(sizes: Mapping[str, int], num_classes: int = 10, seed: int = 0) -> dict:
  """Random clients: cid -> (x float32 [n,28,28] in [0,1], y int32 [n])."""
  rng = np.random.default_rng(seed)
  return {
    cid: (
      rng.random((n, 28, 28), dtype=np.float32),
      rng.integers(0, num_classes, n).astype(np.int32),
    )
    for cid, n in sizes.items()
  }


def tff_split_clients(seed: int = 0) -> dict:
  """Four TFF splits; the digits splits are the all_* splits with labels < 10."""
  all_train = make_clients({"f0000_14": 7, "f0001_41": 5, "f0002_03": 9}, 62, seed)
  all_test = make_clients({"f0000_14": 2, "f0001_41": 3, "f0002_03": 2}, 62, seed + 1)

  def digits(clients):
    out = {}
    for cid, (x, y) in clients.items():
      keep = y < 10
      x, y = (x[keep], y[keep]) if keep.any() else (x[:1], np.zeros(1, np.int32))
      out[cid] = (x, y)
    return out

  return {
    "all_train": all_train,
    "all_test": all_test,
    "digits_only_train": digits(all_train),
    "digits_only_test": digits(all_test),
  }


# --- writers ------------------------------------------------------------------


def write_tff_sqlite(
  path: Path,
  splits: Mapping[str, Clients],
  *,
  encode=example_bytes,
  shuffle_rows: bool = True,
  metadata: bool = True,
) -> Path:
  """Writes TFF's `emnist_all.sqlite` schema; rows interleaved across clients
  (shuffle_rows) so a reader cannot rely on them being grouped."""
  path = Path(path)
  rows = [
    (split, cid, encode(x[i], int(y[i])))
    for split, clients in splits.items()
    for cid, (x, y) in clients.items()
    for i in range(len(y))
  ]
  if shuffle_rows:
    rows = _interleave(rows)
  con = sqlite3.connect(path)
  with con:
    con.execute(
      "CREATE TABLE examples (split_name TEXT NOT NULL, "
      "client_id TEXT NOT NULL, serialized_example_proto BLOB NOT NULL)"
    )
    con.executemany("INSERT INTO examples VALUES (?, ?, ?)", rows)
    if metadata:
      con.execute(
        "CREATE TABLE client_metadata (client_id TEXT NOT NULL, "
        "split_name TEXT NOT NULL, num_examples INTEGER NOT NULL)"
      )
      con.executemany(
        "INSERT INTO client_metadata VALUES (?, ?, ?)",
        [
          (cid, split, len(y))
          for split, clients in splits.items()
          for cid, (_, y) in clients.items()
        ],
      )
  con.close()
  return path


def _interleave(rows: list) -> list:
  """Shuffles rows across clients but keeps each client's own order, which is
  the order TFF (and our reader) return a client's examples in."""
  shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
  positions, originals = {}, {}
  for pos, row in enumerate(shuffled):
    positions.setdefault(row[:2], []).append(pos)
  for row in rows:
    originals.setdefault(row[:2], []).append(row)
  for key, slots in positions.items():
    for pos, row in zip(slots, originals[key]):
      shuffled[pos] = row
  return shuffled


def write_lzma(src: Path, dst: Path) -> Path:
  dst = Path(dst)
  dst.write_bytes(lzma.compress(Path(src).read_bytes()))
  return dst


def write_tff_h5(path: Path, clients: Clients) -> Path:
  """TFF's legacy layout: examples/<cid>/pixels [n,28,28], examples/<cid>/label [n]."""
  import h5py

  with h5py.File(path, "w") as f:
    g = f.create_group("examples")
    for cid, (x, y) in clients.items():
      c = g.create_group(cid)
      c.create_dataset("pixels", data=np.asarray(x, np.float32))
      c.create_dataset("label", data=np.asarray(y, np.int32))
  return Path(path)


def leaf_document(clients: Clients) -> dict:
  users = list(clients)
  return {
    "users": users,
    "num_samples": [len(clients[u][1]) for u in users],
    "user_data": {
      u: {"x": np.asarray(x, np.float32).reshape(len(x), -1).tolist(), "y": np.asarray(y).tolist()}
      for u, (x, y) in clients.items()
    },
  }


def write_leaf_json(
  path: Path, clients: Clients | None = None, *, document: dict | None = None
) -> Path:
  """Writes a LEAF JSON file, gzip-compressed when the name ends in `.gz`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(document if document is not None else leaf_document(clients))
  if path.suffix == ".gz":
    with gzip.open(path, "wt") as f:
      f.write(text)
  else:
    path.write_text(text)
  return path
