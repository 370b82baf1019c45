"""Shakespeare next-character prediction (data/shakespeare.py): the three file layouts,
token sequences as FederatedData and round batches.

The files are tiny ones in the real layouts: TFF's SQLite and legacy h5
(`tests.data.fixtures_tff`) and LEAF's JSON (`write_leaf` below). The ids and sequences are
tests/data/test_text.py's, the sequence loss and the language models
tests/models/test_language.py's, the config's run tests/experiments/test_task_configs.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedjax_compress.data import DataError, FederatedData, pipeline
from fedjax_compress.data import shakespeare, text
from fedjax_compress.data.text import CHAR_VOCAB, SHAKESPEARE_TOKENS as TOK
from tests.data import fixtures_tff
from tests.data.fixtures_tff import SHAKESPEARE_SNIPPETS as SNIPPETS

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "shakespeare_tff"
PAD, OOV, BOS, EOS = TOK.pad, TOK.oov[0], TOK.bos, TOK.eos


def ids(chars: str) -> list[int]:
  return [CHAR_VOCAB.index(c) + 1 for c in chars]


# --- LEAF's layout ----------------------------------------------------------------------


def write_leaf(folder: Path, users: dict[str, str], split: str = "train", window: int = 80) -> Path:
  """LEAF's Shakespeare JSON: every `window`-character window of each user's text as x,
  the character after it as y."""
  doc = {"users": list(users), "num_samples": [], "user_data": {}}
  for uid, line in users.items():
    xs = [line[i : i + window] for i in range(len(line) - window)]
    doc["user_data"][uid] = {"x": xs, "y": [line[i + window] for i in range(len(xs))]}
    doc["num_samples"].append(len(xs))
  (folder / split).mkdir(parents=True, exist_ok=True)
  (folder / split / "all_data_0.json").write_text(json.dumps(doc))
  return folder


# --- the three layouts ------------------------------------------------------------------


def test_sqlite_and_h5_layouts_give_the_same_sequences(tmp_path):
  (tmp_path / "sql").mkdir()
  (tmp_path / "h5").mkdir()
  fixtures_tff.write_shakespeare_sqlite(tmp_path / "sql" / "shakespeare.sqlite")
  fixtures_tff.write_shakespeare_h5(tmp_path / "h5")
  for split, clients in SNIPPETS.items():
    a = shakespeare.load_shakespeare(split, data_dir=tmp_path / "sql", seq_len=8)
    b = shakespeare.load_shakespeare(split, data_dir=tmp_path / "h5", seq_len=8)
    assert a.client_ids == b.client_ids == tuple(sorted(clients))
    assert a.tokens == b.tokens == TOK and a.num_classes == 90 and a.example_shape == (8,)
    for cid, snippets in clients.items():
      expected = text.snippets_to_sequences(snippets, 8)
      for data in (a, b):
        np.testing.assert_array_equal(data.clients[cid][0], expected[0])
        np.testing.assert_array_equal(data.clients[cid][1], expected[1])
  hamlet_x, hamlet_y = a.clients["HAMLET"]  # test split: "Words, words, words." (20 chars)
  assert hamlet_x.shape == (3, 8) and hamlet_x.dtype == np.int32  # 22 ids -> 3 chunks of 9
  assert hamlet_x[0, 0] == BOS and hamlet_y[2, 2] == EOS and (hamlet_y[2, 3:] == PAD).all()


def test_sqlite_lzma_is_decompressed_into_the_cache(tmp_path):
  import lzma

  raw = fixtures_tff.write_shakespeare_sqlite(tmp_path / "shakespeare.sqlite").read_bytes()
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "shakespeare.sqlite.lzma").write_bytes(lzma.compress(raw))
  data = shakespeare.load_shakespeare(
    "train", data_dir=tmp_path / "in", cache_dir=tmp_path / "cache"
  )
  assert (tmp_path / "cache" / "shakespeare.sqlite").exists()
  assert data.client_ids == ("HAMLET", "OPHELIA") and data.example_shape == (80,)


def test_leaf_json_keeps_one_target_per_window(tmp_path):
  line = "To be, or not to be, that is the question."  # 42 characters
  write_leaf(tmp_path, {"HAMLET": line}, window=40)
  data = shakespeare.load_shakespeare("train", data_dir=tmp_path, seq_len=40)
  x, y = data.clients["HAMLET"]
  assert x.shape == y.shape == (2, 40)
  np.testing.assert_array_equal(x[1], ids(line[1:41]))
  assert (y[:, :-1] == PAD).all() and list(y[:, -1]) == ids(line[40:42])
  with pytest.raises(DataError, match="x has 40 characters but seq_len=80"):
    shakespeare.load_shakespeare("train", data_dir=tmp_path)
  # One id per character: a non-ASCII character is one OOV, the window stays 40 long.
  write_leaf(tmp_path, {"HAMLET": "é" + line}, window=40)
  x, _ = shakespeare.load_shakespeare("train", data_dir=tmp_path, seq_len=40).clients["HAMLET"]
  assert x[0, 0] == OOV and x.shape == (3, 40)


def test_loader_errors_name_the_problem_and_the_fix(tmp_path):
  with pytest.raises(DataError, match="needs data_dir="):
    shakespeare.load_shakespeare("train")
  with pytest.raises(DataError, match="no Shakespeare data in .*shakespeare.sqlite"):
    shakespeare.load_shakespeare("train", data_dir=tmp_path)
  with pytest.raises(DataError, match="split must be 'train' or 'test'"):
    shakespeare.load_shakespeare("validation", data_dir=tmp_path)
  fixtures_tff.write_shakespeare_sqlite(
    tmp_path / "shakespeare.sqlite", {"train": SNIPPETS["train"]}
  )
  with pytest.raises(DataError, match="no split 'test' .* found \\['train'\\]"):
    shakespeare.load_shakespeare("test", data_dir=tmp_path)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "shakespeare.sqlite").write_bytes(b"not a database" * 100)
  with pytest.raises(DataError, match="not a readable SQLite database"):
    shakespeare.load_shakespeare("train", data_dir=tmp_path / "bad")


def test_registered_as_a_dataset(tmp_path):
  from fedjax_compress.data import bind_dataset

  fixtures_tff.write_shakespeare_h5(tmp_path)
  load = bind_dataset("shakespeare", {"data_dir": str(tmp_path), "seq_len": 8})
  assert load("test").client_ids == ("HAMLET", "OPHELIA")


# --- FederatedData and the round's batches ----------------------------------------------


def _token_data(seq_len=8) -> FederatedData:
  clients = {cid: text.snippets_to_sequences(s, seq_len) for cid, s in SNIPPETS["train"].items()}
  return FederatedData(clients, TOK.vocab_size, "tiny", TOK)


def test_validate_checks_token_sequences():
  assert _token_data().validate().num_classes == 90
  x, y = _token_data().clients["HAMLET"]
  bad = [
    ({"A": (x.astype(np.float32), y)}, 90, "dtype float32; token ids must be integers"),
    ({"A": (x, y + 90)}, 90, "outside \\[0, 90\\)"),
    ({"A": (x, y[:1])}, 90, "input sequences but 1 targets"),
    ({"A": (x, y), "B": (x[:, :4], y[:, :4])}, 90, "expected \\(8,\\)"),
    ({"A": (x, y)}, 89, "num_classes=89 but the vocabulary has 90"),
  ]
  for clients, num_classes, message in bad:
    with pytest.raises(DataError, match=message):
      FederatedData(clients, num_classes, "t", TOK).validate()
  with pytest.raises(DataError, match="only_digits applies to image labels"):
    _token_data().only_digits()


def test_round_batch_lays_out_int_sequences_with_padding_rows_masked():
  data = _token_data()
  batch = pipeline.round_batch(data, data.client_ids, batch_size=3, shuffle=False)
  n_hamlet, n_ophelia = (data.num_examples(c) for c in data.client_ids)
  assert (n_hamlet, n_ophelia) == (4, 2)  # 2 and 1 batches of 3, padded to 2
  assert batch.x.dtype == batch.y.dtype == np.int32
  assert batch.x.shape == batch.y.shape == (2, 2, 3, 8) and batch.mask.shape == (2, 2, 3)
  assert batch.mask[0].sum() == n_hamlet and batch.mask[1].sum() == n_ophelia
  np.testing.assert_array_equal(batch.y[0].reshape(-1, 8)[:n_hamlet], data.clients["HAMLET"][1])
  assert (batch.x[~batch.mask] == PAD).all() and (batch.y[~batch.mask] == PAD).all()
  ev = pipeline.eval_batches(data, batch_size=4)
  assert ev.x.shape == (1, 2, 4, 8) and ev.mask.sum() == n_hamlet + n_ophelia


# --- the real files ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
  not REAL.is_dir(),
  reason=f"the real TFF Shakespeare h5 files are not at "
  f"{REAL} (../shared is absent on this machine)",
)
def test_real_tff_h5_files():
  for split, snippets in (("train", 16_068), ("test", 2_356)):
    data = shakespeare.load_shakespeare(split, data_dir=REAL)
    assert len(data.client_ids) == 715 and data.example_shape == (80,)
    # Each snippet starts one sequence with BOS; BOS occurs nowhere else.
    assert sum(int((x == BOS).sum()) for x, _ in data.clients.values()) == snippets
