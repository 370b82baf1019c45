"""Language models (models/language.py): the sequence loss and metrics, the task, Reddi et
al.'s LSTMs and a client's gradient over token sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import learning, models
from fedjax_compress.data import FederatedData, pipeline, text
from fedjax_compress.data.text import SHAKESPEARE_TOKENS as TOK
from tests.data.fixtures_tff import SHAKESPEARE_SNIPPETS

PAD, OOV, EOS = TOK.pad, TOK.oov[0], TOK.eos


def _token_data(seq_len=8) -> FederatedData:
  clients = {
    cid: text.snippets_to_sequences(s, seq_len) for cid, s in SHAKESPEARE_SNIPPETS["train"].items()
  }
  return FederatedData(clients, TOK.vocab_size, "tiny", TOK)


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
    "loss",
    "accuracy",
    "accuracy_no_oov",
    "accuracy_no_oov_no_eos",
    "num_tokens",
    "num_examples",
  }
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
    carry = trainer.step(
      carry, params, batch.x[0, b], batch.y[0, b], batch.mask[0, b], jax.random.key(b)
    )
  out = trainer.finalize(carry, params)
  assert float(out.num_examples) == data.num_examples("HAMLET")  # sequences, not tokens
  x, y = data.clients["HAMLET"]
  grad = jax.grad(lambda p: models.sequence_loss(model.apply(p, x), y, jnp.ones(len(y), bool)))(
    params
  )
  for a, b in zip(jax.tree.leaves(out.delta), jax.tree.leaves(grad)):
    np.testing.assert_allclose(a, -b, rtol=2e-4, atol=1e-6)
