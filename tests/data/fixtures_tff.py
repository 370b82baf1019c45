"""Writers of tiny files in TFF's real layouts, for the CIFAR-100, Stack Overflow and
Shakespeare tests (tests/data/test_*.py) and the task configs' runs
(tests/experiments/test_task_configs.py).

- TFF's SQLite client data (`sql_client_data.py`; the schema and indexes as FedJAX's
  `sqlite_federated_data.py` documents TFF's files): `examples(split_name, client_id,
  serialized_example_proto)` with indexes on client_id and (split_name, client_id), and
  `client_metadata(client_id, split_name, num_examples)`.
- CIFAR-100: examples with `image` (int64 list of 3,072 pixels), `label`, `coarse_label`;
  the legacy `fed_cifar100_{train,test}.h5`.
- Stack Overflow: examples with TFF's six features (`creation_date`, `score`, `tags`,
  `title`, `tokens`, `type`); `stackoverflow.sqlite[.lzma]`; the word-count file.
- Shakespeare: examples with a bytes feature `snippets` in `shakespeare.sqlite` (with
  client_metadata, as TFF's files have it); the legacy `shakespeare_{train,test}.h5`
  (`/examples/<client>/snippets`, byte strings).

The tf.train.Example bytes come from the protobuf runtime (`tests.data.fixtures`), not
from this project's decoder. Import as `from tests.data import fixtures_tff` (the
repository root is on sys.path: tests/conftest.py puts it there).
"""

from __future__ import annotations

import lzma
import sqlite3
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from tests.data import fixtures

CifarClients = Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # image, label, coarse


def example_bytes(features: Mapping[str, object]) -> bytes:
  """A serialized tf.train.Example: ints (or int arrays) become int64 lists, str/bytes
  one-element bytes lists."""
  ex = fixtures.example_class()()
  for name, value in features.items():
    feature = ex.features.feature[name]
    if isinstance(value, (str, bytes)):
      feature.bytes_list.value.append(value.encode() if isinstance(value, str) else value)
    else:
      feature.int64_list.value.extend(np.asarray(value, np.int64).ravel().tolist())
  return ex.SerializeToString()


def write_tff_sqlite(
  path: Path, rows: Iterable[tuple[str, str, bytes]], *, indexes: bool = True
) -> Path:
  """TFF's SQLite client data from (split_name, client_id, serialized example) rows, in the
  order given; client_metadata counts them."""
  path = Path(path)
  rows = list(rows)
  counts: dict[tuple[str, str], int] = {}
  for split, cid, _ in rows:
    counts[(split, cid)] = counts.get((split, cid), 0) + 1
  con = sqlite3.connect(path)
  with con:
    con.execute(
      "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
      "serialized_example_proto BLOB NOT NULL)"
    )
    con.execute(
      "CREATE TABLE client_metadata (client_id TEXT NOT NULL, "
      "split_name TEXT NOT NULL, num_examples INTEGER NOT NULL)"
    )
    if indexes:
      con.execute("CREATE INDEX idx_examples_client_id ON examples (client_id)")
      con.execute("CREATE INDEX idx_examples_client_id_split ON examples (split_name, client_id)")
      con.execute("CREATE INDEX idx_metadata_client_id ON client_metadata (client_id)")
    con.executemany("INSERT INTO examples VALUES (?, ?, ?)", rows)
    con.executemany(
      "INSERT INTO client_metadata VALUES (?, ?, ?)",
      [(cid, split, n) for (split, cid), n in counts.items()],
    )
  con.close()
  return path


def interleave(rows: list, seed: int = 1) -> list:
  """Rows shuffled across clients, each client's own rows kept in order."""
  order = np.random.default_rng(seed).permutation(len(rows))
  slots: dict[tuple, list[int]] = {}
  for pos, i in enumerate(order):
    slots.setdefault(rows[i][:2], []).append(pos)
  out = [None] * len(rows)
  mine: dict[tuple, list] = {}
  for row in rows:
    mine.setdefault(row[:2], []).append(row)
  for key, positions in slots.items():
    for pos, row in zip(positions, mine[key]):
      out[pos] = row
  return out


def write_lzma(src: Path, dst: Path) -> Path:
  dst = Path(dst)
  dst.write_bytes(lzma.compress(Path(src).read_bytes()))
  return dst


# --- CIFAR-100 ----------------------------------------------------------------------------


def cifar_clients(sizes: Mapping[str, int], seed: int = 0) -> dict:
  """Random clients: cid -> (image uint8 [n,32,32,3], label [n] < 100, coarse [n] < 20)."""
  rng = np.random.default_rng(seed)
  return {
    cid: (
      rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
      rng.integers(0, 100, n),
      rng.integers(0, 20, n),
    )
    for cid, n in sizes.items()
  }


def cifar_rows(splits: Mapping[str, CifarClients]) -> list[tuple[str, str, bytes]]:
  return [
    (split, cid, example_bytes({"coarse_label": [c[i]], "image": x[i], "label": [y[i]]}))
    for split, clients in splits.items()
    for cid, (x, y, c) in clients.items()
    for i in range(len(y))
  ]


def write_cifar_sqlite(path: Path, splits: Mapping[str, CifarClients], **kw) -> Path:
  """TFF's cifar100.sqlite with the given splits, rows interleaved across clients."""
  return write_tff_sqlite(path, interleave(cifar_rows(splits)), **kw)


def write_cifar_h5(path: Path, clients: CifarClients, *, label_shape: str = "[n,1]") -> Path:
  """TFF's legacy fed_cifar100_*.h5: examples/<cid>/{image, label, coarse_label}."""
  import h5py

  with h5py.File(path, "w") as f:
    g = f.create_group("examples")
    for cid, (x, y, c) in clients.items():
      group = g.create_group(cid)
      group.create_dataset("image", data=np.asarray(x, np.uint8))
      shape = (-1, 1) if label_shape == "[n,1]" else (-1,)
      group.create_dataset("label", data=np.asarray(y, np.int64).reshape(shape))
      group.create_dataset("coarse_label", data=np.asarray(c, np.int64).reshape(shape))
  return Path(path)


# --- Stack Overflow ------------------------------------------------------------------------

# Tiny splits with known vocabulary counts (tests/data/test_stackoverflow.py asserts on them).
STACKOVERFLOW_SPLITS = {  # split -> client -> sentences
  "train": {
    "u1": ["hello world .", "the cat sat on the mat", " ".join(["a"] * 25)],
    "u2": ["hello there", ""],
    "u3": ["x y z", "hello cat"],
  },
  "test": {"t1": ["hello world", "new words here"], "t2": ["the end ."], "t3": ["cat"]},
  "heldout": {"h1": ["hello"]},
}
STACKOVERFLOW_WORD_COUNTS = {
  "hello": 90,
  ".": 80,
  "the": 70,
  "cat": 60,
  "a": 50,
  "world": 40,
  "sat": 30,
}


def stackoverflow_example(
  tokens: str,
  *,
  title: str = "a title",
  tags: str = "python|numpy",
  kind: str = "answer",
  score: int = 1,
  date: str = "2010-01-08 09:34:05 UTC",
) -> bytes:
  """One Stack Overflow example with TFF's six features."""
  return example_bytes(
    {
      "creation_date": date,
      "score": [score],
      "tags": tags,
      "title": title,
      "tokens": tokens,
      "type": kind,
    }
  )


def write_stackoverflow_sqlite(
  path: Path, splits: Mapping[str, Mapping[str, list[str]]], **kw
) -> Path:
  """TFF's stackoverflow.sqlite: {split: {client: [sentences]}}, rows interleaved."""
  rows = [
    (split, cid, stackoverflow_example(s))
    for split, clients in splits.items()
    for cid, sentences in clients.items()
    for s in sentences
  ]
  return write_tff_sqlite(path, interleave(rows), **kw)


def write_word_counts(path: Path, counts: Mapping[str, int]) -> Path:
  """TFF's stackoverflow.word_count: 'word count' lines, most frequent first."""
  path = Path(path)
  path.write_text("".join(f"{w} {n}\n" for w, n in counts.items()))
  return path


# --- Shakespeare ---------------------------------------------------------------------------

SHAKESPEARE_SNIPPETS = {  # split -> client -> snippets (byte strings, as TFF stores them)
  "train": {"HAMLET": [b"To be, or not to be", b"Ay"], "OPHELIA": [b"My lord?\nNo."]},
  "test": {"HAMLET": [b"Words, words, words."], "OPHELIA": [b"O\xc3\xa9!"]},
}


def shakespeare_example(snippet: bytes) -> bytes:
  """One Shakespeare example: the bytes feature `snippets`."""
  ex = fixtures.example_class()()
  ex.features.feature["snippets"].bytes_list.value.append(snippet)
  return ex.SerializeToString()


def write_shakespeare_sqlite(path: Path, splits=SHAKESPEARE_SNIPPETS) -> Path:
  """TFF's `shakespeare.sqlite` schema (with client_metadata, as TFF's files have it)."""
  con = sqlite3.connect(path)
  with con:
    con.execute(
      "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
      "serialized_example_proto BLOB NOT NULL)"
    )
    con.execute(
      "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT "
      "NULL, num_examples INTEGER NOT NULL)"
    )
    for split, clients in splits.items():
      for cid, snippets in clients.items():
        con.executemany(
          "INSERT INTO examples VALUES (?, ?, ?)",
          [(split, cid, shakespeare_example(s)) for s in snippets],
        )
        con.execute("INSERT INTO client_metadata VALUES (?, ?, ?)", (cid, split, len(snippets)))
  con.close()
  return path


def write_shakespeare_h5(folder: Path, splits=SHAKESPEARE_SNIPPETS) -> Path:
  """TFF's legacy shakespeare_{split}.h5 files in `folder`."""
  import h5py

  for split, clients in splits.items():
    with h5py.File(folder / f"shakespeare_{split}.h5", "w") as f:
      for cid, snippets in clients.items():
        width = max(len(s) for s in snippets)
        f.create_dataset(f"examples/{cid}/snippets", data=np.array(snippets, f"S{width}"))
  return folder
