"""TFF's Stack Overflow (data/stackoverflow.py): the SQLite layout, the vocabulary and ids,
lazy clients, the errors. (The config's run: tests/experiments/test_task_configs.py.)"""

import bz2
import io
import sqlite3
import tarfile

import numpy as np
import pytest

from fedjax_compress.data import DataError, pipeline, stackoverflow
from tests.data import fixtures_tff
from tests.data.fixtures_tff import STACKOVERFLOW_SPLITS as SPLITS
from tests.data.fixtures_tff import STACKOVERFLOW_WORD_COUNTS as WORD_COUNTS


@pytest.fixture(scope="module")
def so_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("stackoverflow")
  fixtures_tff.write_stackoverflow_sqlite(folder / stackoverflow.SQLITE_NAME, SPLITS)
  fixtures_tff.write_word_counts(folder / stackoverflow.WORD_COUNT_NAME, WORD_COUNTS)
  return folder


def load(so_dir, split="train", **kw):
  return stackoverflow.load_stackoverflow(split, data_dir=so_dir, **{"vocab_size": 5, **kw})


# --- vocabulary and ids ------------------------------------------------------------------


def test_ids_are_tffs_layout_and_sequences_tffs_preprocessing(so_dir):
  data = load(so_dir)
  tokens = data.tokens
  assert tokens == (0, 7, 8, (6,), 9)  # pad, BOS, EOS, OOV, 5 words + 4 specials
  assert data.num_classes == 9 and data.example_shape == (20,)
  assert data.clients.tokenizer.words == ("hello", ".", "the", "cat", "a")
  x, y = data.clients["u1"]
  assert x.dtype == y.dtype == np.int32 and x.shape == y.shape == (3, 20)
  # "hello world ." -> BOS hello OOV . EOS, padded; y is x shifted by one.
  np.testing.assert_array_equal(x[0, :5], [7, 1, 6, 2, 8])
  np.testing.assert_array_equal(y[0, :4], [1, 6, 2, 8])
  assert not x[0, 5:].any() and not y[0, 4:].any()
  # 25 words: cut to 20, no EOS; x = BOS + 19 words, y = the 20 words.
  np.testing.assert_array_equal(x[2], [7] + [5] * 19)
  np.testing.assert_array_equal(y[2], [5] * 20)
  # "" is one empty (OOV) word, as tf.strings.split(sep=' ') gives.
  np.testing.assert_array_equal(data.clients["u2"][0][1, :3], [7, 6, 8])
  assert data.clients.tokenizer.decode(x[1, :8]) == "<bos> the cat <oov> <oov> the <oov> <eos>"
  data.validate()


def test_vocabulary_from_the_training_clients_counts_users(so_dir):
  data = load(so_dir, vocab_from="train", vocab_size=3)
  # hello: 3 users (u1, u2, u3); cat: 2 (u1, u3); then ties broken by the word.
  assert data.clients.tokenizer.words == ("hello", "cat", ".")


def test_word_counts_come_from_the_archive_in_the_cache(tmp_path, so_dir):
  payload = stackoverflow.WORD_COUNT_NAME.encode()
  body = "".join(f"{w} {n}\n" for w, n in WORD_COUNTS.items()).encode()
  raw = io.BytesIO()
  with tarfile.open(fileobj=raw, mode="w") as tar:
    info = tarfile.TarInfo(payload.decode())
    info.size = len(body)
    tar.addfile(info, io.BytesIO(body))
  cache = tmp_path / "cache"
  cache.mkdir()
  (cache / stackoverflow.WORD_COUNT_ARCHIVE).write_bytes(bz2.compress(raw.getvalue()))
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  (data_dir / stackoverflow.SQLITE_NAME).write_bytes(
    (so_dir / stackoverflow.SQLITE_NAME).read_bytes()
  )
  data = stackoverflow.load_stackoverflow("train", data_dir=data_dir, cache_dir=cache, vocab_size=2)
  assert data.clients.tokenizer.words == ("hello", ".")
  assert (cache / stackoverflow.WORD_COUNT_NAME).exists()


def test_lzma_is_decompressed_into_the_cache(tmp_path, so_dir):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  fixtures_tff.write_lzma(so_dir / stackoverflow.SQLITE_NAME, data_dir / stackoverflow.LZMA_NAME)
  fixtures_tff.write_word_counts(data_dir / stackoverflow.WORD_COUNT_NAME, WORD_COUNTS)
  data = stackoverflow.load_stackoverflow(
    "train", data_dir=data_dir, cache_dir=tmp_path / "c", vocab_size=5
  )
  assert (tmp_path / "c" / stackoverflow.SQLITE_NAME).exists()
  assert data.client_ids == ("u1", "u2", "u3")


# --- lazy clients ------------------------------------------------------------------------


def test_lazy_clients_read_only_what_is_asked(so_dir):
  data = load(so_dir)
  clients = data.clients
  assert isinstance(clients, stackoverflow.LazyClients)
  assert len(clients) == 3 and list(clients) == ["u1", "u2", "u3"] and clients.reads == 0
  assert "u2" in clients and "nobody" not in clients and 3 not in clients
  assert clients.num_examples("u1") == 3 and clients.reads == 0  # client_metadata only
  batch = pipeline.round_batch(data, ["u3", "u1"], batch_size=2, seed=0, round_num=1)
  assert clients.reads == 2 and batch.x.dtype == np.int32 and batch.x.shape[-1] == 20
  pipeline.round_batch(data, ["u3", "u1"], batch_size=2, seed=0, round_num=2)
  assert clients.reads == 2  # cached
  with pytest.raises(KeyError):
    clients["nobody"]


def test_training_clients_keep_their_first_sentences(so_dir):
  data = load(so_dir, max_elements_per_client=2)
  x, _ = data.clients["u1"]
  assert len(x) == 2 and data.clients.num_examples("u1") == 2
  np.testing.assert_array_equal(x, load(so_dir).clients["u1"][0][:2])  # file order


def test_validation_is_the_first_sentences_of_seeded_clients(so_dir):
  test = load(so_dir, "test", num_validation_examples=3)
  assert not isinstance(test.clients, stackoverflow.LazyClients)
  assert sum(len(y) for _, y in test.clients.values()) == 3
  again = load(so_dir, "test", num_validation_examples=3)
  assert list(again.clients) == list(test.clients)
  for cid, (x, y) in test.clients.items():
    np.testing.assert_array_equal(again.clients[cid][0], x)
  everything = load(so_dir, "test", num_validation_examples=-1)
  assert isinstance(everything.clients, stackoverflow.LazyClients)
  assert sum(len(everything.clients[c][1]) for c in everything.clients) == 4
  *whole, last = test.clients  # whole clients in the drawn order, then a prefix of one
  for cid in whole:
    np.testing.assert_array_equal(test.clients[cid][0], everything.clients[cid][0])
  part = test.clients[last][0]
  np.testing.assert_array_equal(part, everything.clients[last][0][: len(part)])
  orders = {
    tuple(load(so_dir, "test", num_validation_examples=1, seed=s).clients) for s in range(8)
  }
  assert len(orders) > 1  # the seed picks the clients
  assert load(so_dir, "heldout").client_ids == ("h1",)


def test_a_client_without_an_index_still_reads(tmp_path):
  path = tmp_path / stackoverflow.SQLITE_NAME
  fixtures_tff.write_stackoverflow_sqlite(path, {"train": SPLITS["train"]}, indexes=False)
  fixtures_tff.write_word_counts(tmp_path / stackoverflow.WORD_COUNT_NAME, WORD_COUNTS)
  data = load(tmp_path)
  assert not data.clients.index.indexed
  np.testing.assert_array_equal(data.clients["u3"][0][0, :5], [7, 6, 6, 6, 8])


# --- errors ------------------------------------------------------------------------------


def test_user_mistakes_are_one_line_data_errors(tmp_path, so_dir):
  cases = [
    (dict(split="validation"), "split must be one of"),
    (dict(split="train", data_dir=so_dir, seq_len=0), "seq_len=0 is invalid"),
    (dict(split="train", data_dir=so_dir, max_elements_per_client=0), "-1 \\(all\\)"),
    (dict(split="train", data_dir=so_dir, vocab_from="test"), "vocab_from='test'"),
    (dict(split="train", data_dir=so_dir, vocab_size=100), "fewer than vocab_size=100"),
    (
      dict(split="train", data_dir=tmp_path),
      "expected stackoverflow.sqlite or stackoverflow.sqlite.lzma",
    ),
    (dict(split="train", data_dir=tmp_path / "nope"), "is not a folder"),
    (dict(split="train", cache_dir=tmp_path, download=False), "download=False"),
    (dict(split="train", cache_dir=tmp_path), stackoverflow.LZMA_NAME),  # closed port
  ]
  for kwargs, message in cases:
    with pytest.raises(DataError, match=message) as e:
      stackoverflow.load_stackoverflow(**kwargs)
    assert "\n" not in str(e.value)


def test_missing_word_counts_say_how_to_get_them(tmp_path, so_dir):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  (data_dir / stackoverflow.SQLITE_NAME).write_bytes(
    (so_dir / stackoverflow.SQLITE_NAME).read_bytes()
  )
  with pytest.raises(DataError, match="vocab_from='train'"):
    stackoverflow.load_stackoverflow("train", data_dir=data_dir, download=False)
  with pytest.raises(DataError, match=stackoverflow.WORD_COUNT_ARCHIVE):
    stackoverflow.load_stackoverflow("train", data_dir=data_dir)  # closed port
  (data_dir / stackoverflow.WORD_COUNT_NAME).write_text("hello 3\nbroken\n")
  with pytest.raises(DataError, match="line 2: 'broken' is not 'word count'"):
    stackoverflow.load_stackoverflow("train", data_dir=data_dir, vocab_size=2)


def test_bad_rows_name_the_client_and_example(tmp_path):
  rows = [
    ("train", "u1", fixtures_tff.stackoverflow_example("fine")),
    ("train", "u1", fixtures_tff.example_bytes({"title": "no tokens"})),
  ]
  fixtures_tff.write_tff_sqlite(tmp_path / stackoverflow.SQLITE_NAME, rows)
  fixtures_tff.write_word_counts(tmp_path / stackoverflow.WORD_COUNT_NAME, WORD_COUNTS)
  data = load(tmp_path)  # opening reads no example
  with pytest.raises(DataError, match=r"client 'u1', example 1: feature 'tokens'"):
    data.clients["u1"]
  with sqlite3.connect(tmp_path / stackoverflow.SQLITE_NAME) as con:
    con.execute("UPDATE client_metadata SET num_examples = 0")
  with pytest.raises(DataError, match=r"client 'u1': client_metadata lists 0 examples"):
    load(tmp_path)


# --- damaged files ---------------------------------------------------------------------


def test_damaged_files_raise_data_errors_or_load(tmp_path, so_dir):
  """Random truncations and byte flips: a DataError (on opening or on reading a client) or
  valid clients, nothing else."""
  data = (so_dir / stackoverflow.SQLITE_NAME).read_bytes()
  rng = np.random.default_rng(5)
  outcomes = {"loaded": 0, "DataError": 0}
  for trial in range(20):
    folder = tmp_path / f"trial{trial}"
    folder.mkdir()
    damaged = bytearray(data[: int(rng.integers(0, len(data)))] if rng.random() < 0.5 else data)
    for i in rng.integers(0, len(damaged), size=int(rng.integers(1, 8))) if damaged else ():
      damaged[i] ^= int(rng.integers(1, 256))
    (folder / stackoverflow.SQLITE_NAME).write_bytes(bytes(damaged))
    fixtures_tff.write_word_counts(folder / stackoverflow.WORD_COUNT_NAME, WORD_COUNTS)
    try:
      loaded = load(folder)
      for cid in loaded.clients:
        loaded.clients[cid]
      loaded.validate()
      outcomes["loaded"] += 1
    except DataError as e:
      assert str(e) and "\n" not in str(e)
      outcomes["DataError"] += 1
  assert outcomes["DataError"] > 0, outcomes
