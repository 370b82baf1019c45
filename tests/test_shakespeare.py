"""Shakespeare next-character prediction: ids, sequences, the three file layouts, the
sequence loss and metrics, the language models and a 2-round run.

The fixture writers below produce tiny files in the real layouts: TFF's SQLite
(`examples(split_name, client_id, serialized_example_proto)`, tf.train.Examples with a
bytes feature `snippets`, written with the protobuf runtime), TFF's legacy h5
(`/examples/<client>/snippets`, byte strings) and LEAF's JSON.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shakespeare as shakespeare_config
from experiments import overrides, train
from fedjax_compress import learning, models
from fedjax_compress.data import DataError, FederatedData, TokenIds, pipeline
from fedjax_compress.data import shakespeare, text
from fedjax_compress.data.text import CHAR_VOCAB, SHAKESPEARE_TOKENS as TOK
from tests.data import fixtures

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "shakespeare_tff"
PAD, OOV, BOS, EOS = TOK.pad, TOK.oov[0], TOK.bos, TOK.eos
SNIPPETS = {  # split -> client -> snippets (byte strings, as TFF stores them)
    "train": {"HAMLET": [b"To be, or not to be", b"Ay"], "OPHELIA": [b"My lord?\nNo."]},
    "test": {"HAMLET": [b"Words, words, words."], "OPHELIA": [b"O\xc3\xa9!"]},
}


def ids(chars: str) -> list[int]:
  return [CHAR_VOCAB.index(c) + 1 for c in chars]


# --- fixture writers --------------------------------------------------------------------

def snippet_example(snippet: bytes) -> bytes:
  ex = fixtures.example_class()()
  ex.features.feature["snippets"].bytes_list.value.append(snippet)
  return ex.SerializeToString()


def write_sqlite(path: Path, splits=SNIPPETS) -> Path:
  """TFF's `shakespeare.sqlite` schema (with client_metadata, as TFF's files have it)."""
  con = sqlite3.connect(path)
  with con:
    con.execute("CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
                "serialized_example_proto BLOB NOT NULL)")
    con.execute("CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT "
                "NULL, num_examples INTEGER NOT NULL)")
    for split, clients in splits.items():
      for cid, snippets in clients.items():
        con.executemany("INSERT INTO examples VALUES (?, ?, ?)",
                        [(split, cid, snippet_example(s)) for s in snippets])
        con.execute("INSERT INTO client_metadata VALUES (?, ?, ?)", (cid, split, len(snippets)))
  con.close()
  return path


def write_h5(folder: Path, splits=SNIPPETS) -> Path:
  import h5py
  for split, clients in splits.items():
    with h5py.File(folder / f"shakespeare_{split}.h5", "w") as f:
      for cid, snippets in clients.items():
        width = max(len(s) for s in snippets)
        f.create_dataset(f"examples/{cid}/snippets", data=np.array(snippets, f"S{width}"))
  return folder


def write_leaf(folder: Path, users: dict[str, str], split: str = "train",
               window: int = 80) -> Path:
  """LEAF's Shakespeare JSON: every `window`-character window of each user's text as x,
  the character after it as y."""
  doc = {"users": list(users), "num_samples": [], "user_data": {}}
  for uid, line in users.items():
    xs = [line[i:i + window] for i in range(len(line) - window)]
    doc["user_data"][uid] = {"x": xs, "y": [line[i + window] for i in range(len(xs))]}
    doc["num_samples"].append(len(xs))
  (folder / split).mkdir(parents=True, exist_ok=True)
  (folder / split / "all_data_0.json").write_text(json.dumps(doc))
  return folder


# --- vocabulary, ids, sequences ---------------------------------------------------------

def test_vocabulary_and_special_ids_follow_tff():
  assert len(CHAR_VOCAB) == 86 and len(set(CHAR_VOCAB)) == 86
  assert CHAR_VOCAB[:6] == "dhlptx" and CHAR_VOCAB.endswith("159\r")
  assert TOK == TokenIds(pad=0, bos=88, eos=89, oov=(87,), vocab_size=90)
  assert text.tff_token_ids(10_000) == TokenIds(0, 10_002, 10_003, (10_001,), 10_004)
  with pytest.raises(ValueError, match="num_words"):
    text.tff_token_ids(0)


def test_to_ids_adds_bos_eos_and_maps_bytes_outside_the_vocabulary_to_oov():
  np.testing.assert_array_equal(text.to_ids(b"dh x"), [BOS, 1, 2, 14, 6, EOS])
  assert text.to_ids(b"~")[1] == OOV  # '~' is not in the vocabulary
  # As TFF splits bytes: a two-byte UTF-8 character is two OOV ids.
  np.testing.assert_array_equal(text.to_ids("é"), [BOS, OOV, OOV, EOS])
  assert text.decode(text.to_ids(b"To be~")) == "<bos>To be<oov><eos>"


def test_to_sequences_cuts_chunks_of_seq_len_plus_one_padded_with_pad():
  x, y = text.to_sequences(text.to_ids(b"dhlp"), seq_len=3)  # BOS d h l | p EOS pad pad
  np.testing.assert_array_equal(x, [[BOS, 1, 2], [4, EOS, PAD]])
  np.testing.assert_array_equal(y, [[1, 2, 3], [EOS, PAD, PAD]])
  x, y = text.to_sequences(text.to_ids(b"dh"), seq_len=3)  # exactly one chunk
  np.testing.assert_array_equal(x, [[BOS, 1, 2]])
  np.testing.assert_array_equal(y, [[1, 2, EOS]])
  x, _ = text.snippets_to_sequences([b"dh", b"dhlp"], seq_len=3)  # no chunk mixes snippets
  np.testing.assert_array_equal(x[:, 0], [BOS, BOS, 4])
  with pytest.raises(ValueError, match="seq_len=0"):
    text.to_sequences(np.arange(3), seq_len=0)


# --- the three layouts ------------------------------------------------------------------

def test_sqlite_and_h5_layouts_give_the_same_sequences(tmp_path):
  (tmp_path / "sql").mkdir()
  (tmp_path / "h5").mkdir()
  write_sqlite(tmp_path / "sql" / "shakespeare.sqlite")
  write_h5(tmp_path / "h5")
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
  raw = write_sqlite(tmp_path / "shakespeare.sqlite").read_bytes()
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "shakespeare.sqlite.lzma").write_bytes(lzma.compress(raw))
  data = shakespeare.load_shakespeare("train", data_dir=tmp_path / "in",
                                      cache_dir=tmp_path / "cache")
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
  write_sqlite(tmp_path / "shakespeare.sqlite", {"train": SNIPPETS["train"]})
  with pytest.raises(DataError, match="no split 'test' .* found \\['train'\\]"):
    shakespeare.load_shakespeare("test", data_dir=tmp_path)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "shakespeare.sqlite").write_bytes(b"not a database" * 100)
  with pytest.raises(DataError, match="not a readable SQLite database"):
    shakespeare.load_shakespeare("train", data_dir=tmp_path / "bad")


def test_registered_as_a_dataset(tmp_path):
  from fedjax_compress.data import bind_dataset
  write_h5(tmp_path)
  load = bind_dataset("shakespeare", {"data_dir": str(tmp_path), "seq_len": 8})
  assert load("test").client_ids == ("HAMLET", "OPHELIA")


# --- FederatedData and the round's batches ----------------------------------------------

def _token_data(seq_len=8) -> FederatedData:
  clients = {cid: text.snippets_to_sequences(s, seq_len)
             for cid, s in SNIPPETS["train"].items()}
  return FederatedData(clients, TOK.vocab_size, "tiny", TOK)


def test_validate_checks_token_sequences():
  assert _token_data().validate().num_classes == 90
  x, y = _token_data().clients["HAMLET"]
  bad = [({"A": (x.astype(np.float32), y)}, 90, "dtype float32; token ids must be integers"),
         ({"A": (x, y + 90)}, 90, "outside \\[0, 90\\)"),
         ({"A": (x, y[:1])}, 90, "input sequences but 1 targets"),
         ({"A": (x, y), "B": (x[:, :4], y[:, :4])}, 90, "expected \\(8,\\)"),
         ({"A": (x, y)}, 89, "num_classes=89 but the vocabulary has 90")]
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


# --- loss and metrics -------------------------------------------------------------------

def test_sequence_loss_is_the_mean_over_non_pad_targets_of_real_examples():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 4, 90)), jnp.float32)
  y = jnp.asarray([[5, OOV, EOS, PAD], [7, 8, 9, 10]])
  mask = jnp.asarray([True, False])
  log_p = jax.nn.log_softmax(logits)
  expected = -(log_p[0, 0, 5] + log_p[0, 1, OOV] + log_p[0, 2, EOS]) / 3
  np.testing.assert_allclose(models.sequence_loss(logits, y, mask), expected, rtol=1e-6)
  # Logits at pad targets and in padding examples change nothing.
  other = logits.at[0, 3].set(100.0).at[1].set(-50.0)
  np.testing.assert_allclose(models.sequence_loss(other, y, mask), expected, rtol=1e-6)
  assert float(models.sequence_loss(logits, y, jnp.zeros(2, bool))) == 0.0


def test_accuracies_leave_out_pad_then_oov_then_eos():
  y = jnp.asarray([[5, OOV, EOS, PAD, 6], [5, 5, 5, 5, 5]])
  predicted = jnp.asarray([[5, OOV, 3, 7, 2], [5, 5, 5, 5, 5]])
  logits = jax.nn.one_hot(predicted, 90)
  task = models.sequence_task(TOK)
  sums = task.metric_sums(logits, y, jnp.asarray([True, False]))
  out = task.summarize({k: float(v) for k, v in sums.items()})
  # Scored targets of the real example: 5 (hit), OOV (hit), EOS (miss), 6 (miss).
  assert out["accuracy"] == 2 / 4 and out["num_tokens"] == 4.0
  assert out["accuracy_no_oov"] == 1 / 3  # 5, EOS, 6
  assert out["accuracy_no_oov_no_eos"] == 1 / 2  # 5, 6
  assert out["num_examples"] == 1.0 and set(out) == {
      "loss", "accuracy", "accuracy_no_oov", "accuracy_no_oov_no_eos", "num_tokens",
      "num_examples"}
  assert float(task.num_scored(y, jnp.asarray([True, False]))) == 4
  with pytest.raises(ValueError, match="pads with id 0"):
    models.sequence_task(TOK._replace(pad=3))


def test_classification_stays_the_default_task(tiny_model):
  assert tiny_model.task is models.CLASSIFICATION and tiny_model.task.tokens is None
  models.check_task(tiny_model, None)
  with pytest.raises(ValueError, match="use a language model"):
    models.check_task(tiny_model, TOK)
  with pytest.raises(ValueError, match="not token sequences"):
    models.check_task(models.char_lstm(), None)
  models.check_task(models.char_lstm(), TOK)


# --- models -----------------------------------------------------------------------------

def test_reddi_models_have_the_published_parameter_counts():
  count = lambda m: models.num_parameters(jax.eval_shape(m.init, jax.random.key(0)))
  assert count(models.char_lstm()) == 820_522  # 90 ids
  assert count(models.word_lstm()) == 4_050_748  # 10,004 ids
  assert models.create_model("char_lstm", num_classes=90, input_shape=(80,)).task.tokens == TOK
  assert models.word_lstm().task.tokens == text.tff_token_ids(10_000)
  with pytest.raises(ValueError, match="reads token sequences"):
    models.char_lstm(input_shape=(28, 28, 1))


def _tiny_lstm():
  return models.char_lstm(input_shape=(8,), embed_size=4, hidden_size=8, num_layers=1)


@pytest.mark.slow
def test_clients_weigh_by_sequences_and_fed_sgd_averages_over_tokens():
  model = _tiny_lstm()
  data = _token_data()
  batch = pipeline.round_batch(data, ("HAMLET",), batch_size=4, shuffle=False)
  params = model.init(jax.random.key(0))
  trainer = learning.client.gradient(model)
  carry = trainer.init(params)
  for b in range(batch.x.shape[1]):
    carry = trainer.step(carry, params, batch.x[0, b], batch.y[0, b], batch.mask[0, b],
                         jax.random.key(b))
  out = trainer.finalize(carry, params)
  assert float(out.num_examples) == data.num_examples("HAMLET")  # sequences, not tokens
  x, y = data.clients["HAMLET"]
  grad = jax.grad(lambda p: models.sequence_loss(model.apply(p, x), y, jnp.ones(len(y), bool)))(
      params)
  for a, b in zip(jax.tree.leaves(out.delta), jax.tree.leaves(grad)):
    np.testing.assert_allclose(a, -b, rtol=2e-4, atol=1e-6)


# --- end to end -------------------------------------------------------------------------

def test_two_rounds_through_train_and_evaluate(tmp_path):
  write_h5(tmp_path)
  config = shakespeare_config.get_config()
  for key, value in (("data_dir", str(tmp_path)), ("data.seq_len", "8"), ("rounds", "2"),
                     ("clients_per_round", "2"), ("model.hidden_size", "8"),
                     ("model.num_layers", "1"), ("model.embed_size", "4"),
                     ("checkpoint_every", "0")):
    overrides.apply(config, key, value)
  history = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert [r["round"] for r in history] == [1, 2]
  last = history[-1]
  assert 0.0 <= last["eval/accuracy_no_oov_no_eos"] <= 1.0 and np.isfinite(last["eval/loss"])
  assert last["eval/num_examples"] == 4  # test split: 3 + 1 sequences of 8
  assert history[0]["train/num_batches"] == 2  # 4 + 2 training sequences, batches of 4
  assert last["train/loss"] < np.log(90) + 1


@pytest.mark.skipif(not REAL.is_dir(), reason=f"the real TFF Shakespeare h5 files are not at "
                    f"{REAL} (../shared is absent on this machine)")
def test_real_tff_h5_files():
  for split, snippets in (("train", 16_068), ("test", 2_356)):
    data = shakespeare.load_shakespeare(split, data_dir=REAL)
    assert len(data.client_ids) == 715 and data.example_shape == (80,)
    # Each snippet starts one sequence with BOS; BOS occurs nowhere else.
    assert sum(int((x == BOS).sum()) for x, _ in data.clients.values()) == snippets
