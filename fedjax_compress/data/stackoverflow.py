"""TFF's federated Stack Overflow as next-word prediction, its clients read lazily.

The data (`tff.simulation.datasets.stackoverflow.load_data`): one client per user; splits
'train' (342,477 users, 135,818,730 sentences), 'heldout' (38,758 users) and 'test'
(204,088 users, 16,586,035 sentences). On disk, TFF's `stackoverflow.sqlite.lzma` (from
TFF's bucket; decompressed once into the cache) in TFF's SQL client-data layout
(`sql_client_data.py`): `examples(split_name, client_id, serialized_example_proto)`,
indexed on client_id and (split_name, client_id), and `client_metadata(client_id,
split_name, num_examples)`. Each row is a tf.train.Example with six bytes/int64 features:
`creation_date`, `score`, `tags`, `title`, `tokens` (the sentence's tokens joined by
single spaces) and `type` (TFF's `stackoverflow.py`, `_add_proto_parsing`).

Preprocessing is TFF's next-word-prediction task as Reddi et al. ("Adaptive Federated
Optimization", ICLR 2021) ran it (google-research/federated
`utils/datasets/stackoverflow_word_prediction.py`):
  * the vocabulary is the `vocab_size` (10,000) most frequent words of TFF's
    `stackoverflow.word_count` file ("word count" lines, most frequent first, counts of
    users; `tff.simulation.datasets.stackoverflow.load_word_counts`), or, for data without
    that file (`vocab_from="train"`), of counts built the same way from the training
    clients;
  * ids (`text.tff_token_ids`): pad 0, the words 1..V, OOV V+1, BOS V+2, EOS V+3: V + 4
    logits with one OOV bucket (more buckets are hashed with CRC-32, not TF's FarmHash);
  * a sentence is split on ' ', cut to `seq_len` (20) words, given EOS if shorter than
    that, and BOS in front; padded to seq_len + 1, x = ids[:-1], y = ids[1:];
  * a training client keeps its first `max_elements_per_client` (1000) sentences, in
    file order (TFF's `take` before its shuffle); evaluation clients keep all of theirs.
  * evaluation: Reddi et al. validate on 10,000 test sentences (`take(10000)` of all test
    clients joined in a random client order); `num_validation_examples` does the same,
    with the order drawn from the run's seed. -1 keeps the whole test split, read lazily.

`FederatedData.clients` is a `LazyClients` mapping: opening a split reads only the client
ids and example counts (`client_metadata`); each client is read from SQLite when asked
for (an indexed query), tokenized, and kept in a small LRU cache, so a round reads only
its clients (`benchmarks/lazy_clients.py` measures the memory).
"""

from __future__ import annotations

import bisect
import collections
import functools
import logging
import os
import sqlite3
import tarfile
import threading
import zlib
from pathlib import Path
from typing import IO, Iterator, Mapping, Sequence, cast

import numpy as np

from fedjax_compress.data import download as dl
from fedjax_compress.data import text
from fedjax_compress.data.example_proto import ProtoError, one_bytes_value
from fedjax_compress.data.federated import DataError, FederatedData
from fedjax_compress.data.tff_emnist import BASE_URL_ENV, TFF_BASE_URL

SQLITE_NAME = "stackoverflow.sqlite"
LZMA_NAME = SQLITE_NAME + ".lzma"
WORD_COUNT_NAME = "stackoverflow.word_count"
WORD_COUNT_ARCHIVE = WORD_COUNT_NAME + ".tar.bz2"
# Published in TFF's `stackoverflow.py` (`load_word_counts`, `file_hash`).
WORD_COUNT_SHA256 = "1dc00256d6e527c54b9756d968118378ae14e6692c0b3b6cad470cdd3f0c519c"
SPLITS = ("train", "heldout", "test")
VOCAB_SIZE = 10_000
SEQUENCE_LENGTH = 20
MAX_ELEMENTS_PER_CLIENT = 1000
NUM_VALIDATION_EXAMPLES = 10_000
FEATURE = "tokens"
_TABLES = ("examples", "client_metadata")

Sequences = tuple[np.ndarray, np.ndarray]  # x, y int32 [n, seq_len]


def load_stackoverflow(
  split: str,
  *,
  data_dir: str | os.PathLike | None = None,
  cache_dir: str | os.PathLike | None = None,
  download: bool = True,
  base_url: str | None = None,
  vocab_size: int = VOCAB_SIZE,
  vocab_from: str = "word_counts",
  num_oov_buckets: int = 1,
  seq_len: int = SEQUENCE_LENGTH,
  max_elements_per_client: int = MAX_ELEMENTS_PER_CLIENT,
  num_validation_examples: int = NUM_VALIDATION_EXAMPLES,
  seed: int = 0,
) -> FederatedData:
  """Loads one split of TFF's Stack Overflow as next-word sequences (module docstring).

  Args:
    split: 'train', 'test' or 'heldout'.
    data_dir: folder holding `stackoverflow.sqlite[.lzma]` and, for the vocabulary,
      `stackoverflow.word_count[.tar.bz2]`; when given, the data comes only from there
      (the word counts may also come from the cache or a download).
    cache_dir: download and decompression cache; default $FEDJAX_COMPRESS_CACHE or
      ~/.cache/fedjax_compress.
    download: fetch missing files from TFF's bucket into the cache.
    base_url: where to fetch from; default $FEDJAX_COMPRESS_TFF_BASE_URL or TFF's bucket.
    vocab_size: the number of words with their own id (Reddi et al.: 10,000).
    vocab_from: "word_counts" (TFF's file) or "train" (counted from the training clients:
      one pass over the split, for small data).
    num_oov_buckets: ids for out-of-vocabulary words (Reddi et al.: 1).
    seq_len: the length of x and y (Reddi et al.: 20).
    max_elements_per_client: sentences kept per training client (Reddi et al.: 1000);
      -1 keeps all.
    num_validation_examples: for 'test' and 'heldout', the sentences of the evaluation set
      (Reddi et al.: 10,000); -1 keeps the whole split (lazily).
    seed: the run's seed: the order of the clients the validation sentences come from.

  Returns:
    FederatedData with x, y int32 [n, seq_len], tokens = the ids above, num_classes =
    tokens.vocab_size; for 'train' (and -1), its clients are a `LazyClients` mapping.
  """
  if split not in SPLITS:
    raise DataError(f"Stack Overflow split must be one of {list(SPLITS)}, not {split!r}.")
  for name, value, low in (
    ("vocab_size", vocab_size, 1),
    ("num_oov_buckets", num_oov_buckets, 1),
    ("seq_len", seq_len, 1),
  ):
    if type(value) is not int or value < low:  # bool is not a count either
      raise DataError(
        f"stackoverflow: {name}={value!r} is invalid: it must be an integer >= {low}."
      )
  for name, value in (
    ("max_elements_per_client", max_elements_per_client),
    ("num_validation_examples", num_validation_examples),
  ):
    if type(value) is not int or not (value == -1 or value >= 1):
      raise DataError(
        f"stackoverflow: {name}={value!r} is invalid: it must be -1 (all) or an integer >= 1."
      )
  if vocab_from not in ("word_counts", "train"):
    raise DataError(
      f"stackoverflow: vocab_from={vocab_from!r} is invalid: use 'word_counts' "
      "(TFF's stackoverflow.word_count) or 'train' (counted from the data)."
    )
  path = _locate_sqlite(data_dir, cache_dir, download, base_url)
  index = open_split(path, split)
  if vocab_from == "word_counts":
    counts_path = _locate_word_counts(data_dir, cache_dir, download, base_url)
    words = read_word_counts(counts_path, vocab_size)
  else:
    words = words_from_clients(open_split(path, "train"), vocab_size)
  tokenizer = Tokenizer(words, num_oov_buckets, seq_len)
  source = f"{path}:{split}"
  clients: Mapping[str, Sequences]
  if split == "train" or num_validation_examples == -1:
    limit = max_elements_per_client if split == "train" else -1
    clients = LazyClients(index, tokenizer, limit=limit)
  else:
    clients = validation_clients(index, tokenizer, num_validation_examples, seed)
    source += f" (first {num_validation_examples} sentences, seed {seed})"
  return FederatedData(clients, tokenizer.tokens.vocab_size, source, tokenizer.tokens)


# --- tokenization ---------------------------------------------------------------------


class Tokenizer:
  """Sentences -> TFF's next-word sequences (module docstring)."""

  def __init__(
    self, words: Sequence[str], num_oov_buckets: int = 1, seq_len: int = SEQUENCE_LENGTH
  ):
    self.words = tuple(words)
    self.tokens = text.tff_token_ids(len(self.words), num_oov_buckets)
    self.seq_len = seq_len
    self._ids = {w.encode("utf-8"): i + 1 for i, w in enumerate(self.words)}

  def word_id(self, word: bytes) -> int:
    """A word's id: 1..V, or its OOV bucket."""
    found = self._ids.get(word)
    if found is not None:
      return found
    oov = self.tokens.oov
    return oov[0] if len(oov) == 1 else oov[zlib.crc32(word) % len(oov)]

  def ids(self, sentence: bytes) -> list[int]:
    """[BOS] + the first seq_len words' ids (+ [EOS] if there are fewer)."""
    words = sentence.split(b" ")[: self.seq_len]
    ids = [self.tokens.bos] + [self.word_id(w) for w in words]
    if len(words) < self.seq_len:
      ids.append(self.tokens.eos)
    return ids

  def sequences(self, sentences: Sequence[bytes]) -> Sequences:
    """Sentences -> (x, y) int32 [n, seq_len], padded with pad (0)."""
    padded = np.full((len(sentences), self.seq_len + 1), self.tokens.pad, np.int32)
    for i, sentence in enumerate(sentences):
      ids = self.ids(sentence)
      padded[i, : len(ids)] = ids
    return padded[:, :-1].copy(), padded[:, 1:].copy()

  def decode(self, ids: Sequence[int]) -> str:
    """Ids -> words for inspection; specials as <pad>, <bos>, <eos>, <oov>."""
    t = self.tokens
    names = {t.pad: "<pad>", t.bos: "<bos>", t.eos: "<eos>", **{o: "<oov>" for o in t.oov}}
    return " ".join(names.get(int(i)) or self.words[int(i) - 1] for i in ids)


# --- the vocabulary -------------------------------------------------------------------


def read_word_counts(path: Path, vocab_size: int) -> list[str]:
  """The first `vocab_size` distinct words of TFF's word-count file."""
  words: dict[str, None] = {}
  try:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
          raise DataError(
            f"{path}, line {number}: {line.strip()[:60]!r} is not 'word count'; "
            "is this TFF's stackoverflow.word_count?"
          )
        words.setdefault(parts[0])
        if len(words) == vocab_size:
          break
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read the word counts ({e}).") from e
  if len(words) < vocab_size:
    raise DataError(
      f"{path}: {len(words)} words, fewer than vocab_size={vocab_size}; the file "
      "is truncated, or pass a smaller vocab_size."
    )
  return list(words)


def words_from_clients(clients: "SplitIndex", vocab_size: int) -> list[str]:
  """The `vocab_size` words found in the most clients' sentences (ties by word), TFF's
  word-count definition, counted over every sentence of the split."""
  users: collections.Counter[bytes] = collections.Counter()
  for cid in clients.client_ids:
    seen = set()
    for sentence in clients.sentences(cid):
      seen.update(sentence.split(b" "))
    users.update(seen)
  ranked = sorted(users.items(), key=lambda item: (-item[1], item[0]))
  words = [w.decode("utf-8", "replace") for w, _ in ranked if w][:vocab_size]
  if not words:
    raise DataError(
      f"{clients.path}: the training clients hold no words to build a vocabulary from."
    )
  return words


# --- SQLite: a split's index and its clients --------------------------------------------


class SplitIndex:
  """One split of TFF's SQLite file: its sorted client ids and example counts, read once,
  and each client's sentences on request. Thread-safe: one connection per thread."""

  def __init__(
    self, path: Path, split: str, client_ids: tuple[str, ...], counts: np.ndarray, indexed: bool
  ):
    self.path, self.split, self.client_ids, self.counts = path, split, client_ids, counts
    self.indexed = indexed
    self._local = threading.local()

  def position(self, client_id: str) -> int | None:
    i = bisect.bisect_left(self.client_ids, client_id)
    return i if i < len(self.client_ids) and self.client_ids[i] == client_id else None

  def _connection(self) -> sqlite3.Connection:
    con = getattr(self._local, "con", None)
    if con is None:
      con = self._local.con = _connect(self.path)
    return con

  def sentences(self, client_id: str, limit: int = -1) -> list[bytes]:
    """The `tokens` of a client's first `limit` examples (-1: all), in file order."""
    where = f"{self.path}, split {self.split!r}, client {client_id!r}"
    try:
      rows = (
        self._connection()
        .execute(
          "SELECT serialized_example_proto FROM examples WHERE split_name = ? AND "
          "client_id = ? ORDER BY rowid LIMIT ?",
          (self.split, client_id, limit),
        )
        .fetchall()
      )
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:  # text that is not UTF-8 too
      raise DataError(
        f"{where}: cannot read the client ({e}); the file is truncated or "
        "corrupt. Delete it and fetch it again."
      ) from e
    if not rows:
      raise DataError(
        f"{where}: client_metadata lists the client but examples holds none of its rows."
      )
    return [_tokens(blob, f"{where}, example {i}") for i, (blob,) in enumerate(rows)]


def open_split(path: Path, split: str) -> SplitIndex:
  """Reads a split's client ids and counts (`client_metadata`), checking the layout."""
  try:
    con = _connect(path)
    try:
      tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
      missing = [t for t in _TABLES if t not in tables]
      if missing:
        raise DataError(
          f"{path}: missing table(s) {missing}; found {sorted(tables)}. Is this "
          f"TFF's {SQLITE_NAME}?"
        )
      ids, raw_counts = [], []  # Two flat lists: no tuple per client, even briefly.
      for cid, n in con.execute(
        "SELECT client_id, num_examples FROM client_metadata "
        "WHERE split_name = ? ORDER BY client_id",
        (split,),
      ):
        ids.append(cid)
        raw_counts.append(n)
      if not ids:
        splits = [r[0] for r in con.execute("SELECT DISTINCT split_name FROM client_metadata")]
        raise DataError(f"{path}: no split {split!r} in client_metadata; found {splits}.")
      indexed = _client_index(con)
    finally:
      con.close()
  except (sqlite3.DatabaseError, UnicodeDecodeError) as e:  # text that is not UTF-8 too
    raise DataError(
      f"{path}: not a readable SQLite database ({e}); the file is truncated or "
      "corrupt. Delete it and fetch it again."
    ) from e
  client_ids = tuple(ids)
  del ids
  counts = np.array([n if isinstance(n, int) else -1 for n in raw_counts], np.int64)
  repeated = next((a for a, b in zip(client_ids, client_ids[1:]) if a == b), None)
  if repeated is not None:  # Sorted: a repeat is next to itself.
    raise DataError(
      f"{path}, split {split!r}, client {repeated!r}: client_metadata lists the client twice."
    )
  if (counts <= 0).any():
    bad = int(np.flatnonzero(counts <= 0)[0])
    raise DataError(
      f"{path}, split {split!r}, client {client_ids[bad]!r}: client_metadata "
      f"lists {raw_counts[bad]!r} examples."
    )
  if not indexed:
    logging.warning(
      "%s: table examples has no index on client_id, so each client read scans "
      "the whole table (TFF's file has one).",
      path,
    )
  return SplitIndex(Path(path), split, client_ids, counts, indexed)


def _connect(path: Path) -> sqlite3.Connection:
  try:
    return sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
  except sqlite3.Error as e:
    raise DataError(f"{path}: cannot open as SQLite ({e}).") from e


def _client_index(con: sqlite3.Connection) -> bool:
  """Whether an index of `examples` starts with client_id or (split_name, client_id)."""
  for row in con.execute("PRAGMA index_list(examples)").fetchall():
    columns = [r[2] for r in con.execute(f"PRAGMA index_info({row[1]!r})")]
    if columns[:1] == ["client_id"] or columns[:2] == ["split_name", "client_id"]:
      return True
  return False


def _tokens(blob: bytes, where: str) -> bytes:
  try:
    return one_bytes_value(blob, FEATURE, where)
  except ProtoError as e:
    raise DataError(str(e)) from None


class LazyClients(Mapping[str, Sequences]):
  """client id -> (x, y), read from SQLite and tokenized when asked for.

  Holds the split's client ids and counts; the last `cache_size` clients read are kept
  (a round asks for each of its clients more than once, and the next round is built while
  one trains: 256 covers two rounds of up to 128 clients; at most 160 KB a client of 1000
  sequences of 20). `reads` counts SQLite reads.
  """

  def __init__(
    self, index: SplitIndex, tokenizer: Tokenizer, *, limit: int = -1, cache_size: int = 256
  ):
    self.index, self.tokenizer, self.limit = index, tokenizer, limit
    self.reads = 0
    self._read = functools.lru_cache(maxsize=cache_size)(self._read_client)

  def __getitem__(self, client_id: str) -> Sequences:
    if not isinstance(client_id, str) or self.index.position(client_id) is None:
      raise KeyError(client_id)
    return self._read(client_id)

  def _read_client(self, client_id: str) -> Sequences:
    self.reads += 1
    return self.tokenizer.sequences(self.index.sentences(client_id, self.limit))

  def __contains__(self, client_id: object) -> bool:
    return isinstance(client_id, str) and self.index.position(client_id) is not None

  def __iter__(self) -> Iterator[str]:
    return iter(self.index.client_ids)

  def __len__(self) -> int:
    return len(self.index.client_ids)

  def num_examples(self, client_id: str) -> int:
    """A client's sequences, from client_metadata (no read)."""
    n = int(self.index.counts[self.index.position(client_id)])
    return n if self.limit == -1 else min(n, self.limit)


def validation_clients(
  index: SplitIndex, tokenizer: Tokenizer, num_examples: int, seed: int
) -> dict[str, Sequences]:
  """The first `num_examples` sentences of the split's clients in a seeded random order
  (TFF's `create_tf_dataset_from_all_clients().take(n)`), as in-memory clients."""
  order = np.random.default_rng([seed, 0x50F]).permutation(len(index.client_ids))
  clients, left = {}, num_examples
  for i in order:
    if left <= 0:
      break
    cid = index.client_ids[i]
    take = min(int(index.counts[i]), left)
    clients[cid] = tokenizer.sequences(index.sentences(cid, take))
    left -= take
  return clients


# --- finding the files ------------------------------------------------------------------


def _base_url(base_url: str | None) -> str:
  return (base_url or os.environ.get(BASE_URL_ENV) or TFF_BASE_URL).rstrip("/") + "/"


def _locate_sqlite(data_dir, cache_dir, download, base_url) -> Path:
  """stackoverflow.sqlite from data_dir, else the cache, else a download (then decompressed)."""
  cache = dl.resolve_cache_dir(cache_dir)
  if data_dir is not None:
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
      raise DataError(
        f"stackoverflow: data_dir {folder} is not a folder; pass the folder that holds {LZMA_NAME}."
      )
    if (folder / SQLITE_NAME).exists():
      return folder / SQLITE_NAME
    if (folder / LZMA_NAME).exists():  # Into the cache: data_dir may be read-only.
      return dl.decompressed(folder / LZMA_NAME, cache / SQLITE_NAME)
    raise DataError(
      f"no TFF Stack Overflow file in {folder}: expected {SQLITE_NAME} or {LZMA_NAME} there."
    )
  if (cache / SQLITE_NAME).exists() and not (cache / LZMA_NAME).exists():
    return cache / SQLITE_NAME
  target = cache / LZMA_NAME
  if not target.exists():
    url = _base_url(base_url) + LZMA_NAME
    if not download:
      raise DataError(
        f"TFF Stack Overflow is not in the cache {cache} and download=False: "
        f"download {url} and place it at {target}, or pass data_dir= pointing "
        f"at a folder with {LZMA_NAME}."
      )
    dl.download(url, target)
  return dl.decompressed(target, cache / SQLITE_NAME)


def _locate_word_counts(data_dir, cache_dir, download, base_url) -> Path:
  """stackoverflow.word_count from data_dir or the cache, extracted from its .tar.bz2 (found
  there or downloaded) if need be."""
  cache = dl.resolve_cache_dir(cache_dir)
  folders = ([Path(data_dir).expanduser()] if data_dir is not None else []) + [cache]
  for folder in folders:
    if (folder / WORD_COUNT_NAME).exists():
      return folder / WORD_COUNT_NAME
  for folder in folders:
    if (folder / WORD_COUNT_ARCHIVE).exists():
      return _extract_word_counts(folder / WORD_COUNT_ARCHIVE, cache / WORD_COUNT_NAME)
  url = _base_url(base_url) + WORD_COUNT_ARCHIVE
  if not download:
    raise DataError(
      f"no {WORD_COUNT_NAME} in {' or '.join(map(str, folders))} and "
      f"download=False: download {url} into one of them, or pass "
      "vocab_from='train' to count the words of the training clients."
    )
  archive = dl.download(url, cache / WORD_COUNT_ARCHIVE, expected_sha256=WORD_COUNT_SHA256)
  return _extract_word_counts(archive, cache / WORD_COUNT_NAME)


def _extract_word_counts(archive: Path, dest: Path) -> Path:
  tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
  try:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:bz2") as tar:
      member = next(
        (m for m in tar.getmembers() if m.isfile() and Path(m.name).name == WORD_COUNT_NAME), None
      )
      if member is None:
        raise DataError(
          f"{archive}: no {WORD_COUNT_NAME} inside; is this TFF's {WORD_COUNT_ARCHIVE}?"
        )
      # A regular file's member (isfile above) always has a file object.
      with cast(IO[bytes], tar.extractfile(member)) as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 20):
          out.write(chunk)
    os.replace(tmp, dest)
  except (tarfile.TarError, EOFError, OSError) as e:
    raise DataError(
      f"{archive}: cannot extract {WORD_COUNT_NAME} ({e}); the archive is "
      "truncated or corrupt. Delete it and fetch it again."
    ) from e
  finally:
    tmp.unlink(missing_ok=True)
  return dest
