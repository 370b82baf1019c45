"""Next-token prediction: the sequence task (loss and metrics) and the LSTM language
models of Reddi et al., "Adaptive Federated Optimization" (ICLR 2021).

Models (registered with `register_model`; x int [b, T] token ids -> logits [b, T, V]):
  char_lstm: the Shakespeare model (Reddi et al., appendix; TFF's
    `shakespeare_models.create_recurrent_model`, FedJAX's
    `fedjax.models.shakespeare.create_lstm_model`): embedding 8, two LSTM layers of
    256, dense to the vocabulary. 820,522 parameters for 90 ids.
  word_lstm: the Stack Overflow next-word model (Reddi et al., appendix; TFF's
    `stackoverflow_models.create_recurrent_model`): embedding 96, one LSTM of 670, a
    dense projection to 96, dense to the vocabulary. 4,050,748 parameters for 10,004
    ids (10,000 words, 1 OOV bucket, pad, BOS, EOS).
Initializers follow Keras, the models' original framework, where Flax allows: uniform
(-0.05, 0.05) embeddings, Glorot-uniform kernels, orthogonal recurrent kernels, zero
biases but the forget gate's, 1 as in Keras' LSTM. Keras' `mask_zero` embedding is not reproduced: pad inputs only follow a
sequence's last real token, so they change no scored prediction.

The recurrent layer is built in one place, `recurrent_layer` (the fused LSTM of
`models/lstm.py`).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import linen as nn

from fedjax_compress.models.lstm import LSTM

from fedjax_compress.data.text import SEQUENCE_LENGTH, TokenIds, tff_token_ids
from fedjax_compress.models.model import Model, Task, cross_entropy, from_flax
from fedjax_compress.models.zoo import register_model

# --- the sequence task ---------------------------------------------------------------

# The reported accuracies (`_left_out` lists the target ids each does not score).
SEQUENCE_ACCURACIES = ("accuracy", "accuracy_no_oov", "accuracy_no_oov_no_eos")


def sequence_loss(logits: jax.Array, y: jax.Array, mask: jax.Array, *, pad: int = 0) -> jax.Array:
  """Mean cross-entropy over the targets of real examples that are not `pad`.

  logits [b, T, V], y [b, T], mask [b]; 0 when nothing is scored. FedJAX's Shakespeare
  loss also leaves pad targets out; TFF's Keras tasks do not (their unmasked
  SparseCategoricalCrossentropy also scores predicting pad after a sequence's end).
  """
  scored = mask[..., None] & (y != pad)
  losses = cross_entropy(logits, y)
  return jnp.sum(jnp.where(scored, losses, 0.0)) / jnp.maximum(jnp.sum(scored), 1)


def _left_out(tokens: TokenIds) -> dict[str, tuple[int, ...]]:
  """Accuracy name -> the target ids it does not score."""
  return {
    "accuracy": (tokens.pad,),
    "accuracy_no_oov": (tokens.pad, *tokens.oov),
    "accuracy_no_oov_no_eos": (tokens.pad, *tokens.oov, tokens.eos),
  }


def _sum_keys(name: str) -> tuple[str, str]:
  """(hits key, scored key) of an accuracy: `correct`/`count` for plain accuracy,
  e.g. `correct_no_oov`/`count_no_oov` for the others."""
  suffix = name[len("accuracy") :]
  return "correct" + suffix, "count" + suffix


def sequence_metric_sums(
  logits: jax.Array, y: jax.Array, mask: jax.Array, *, tokens: TokenIds
) -> dict[str, jax.Array]:
  """Sums for `sequence_task`: `loss_sum` over non-pad targets; for each accuracy its
  hits and scored targets (`correct`/`count`: non-pad; `correct_no_oov`/`count_no_oov`;
  `correct_no_oov_no_eos`/`count_no_oov_no_eos`); `num_examples`: real sequences."""
  real = mask[..., None]
  hits = jnp.argmax(logits, axis=-1) == y
  sums = {"loss_sum": jnp.sum(jnp.where(real & (y != tokens.pad), cross_entropy(logits, y), 0.0))}
  for name, left_out in _left_out(tokens).items():
    scored = real & ~jnp.isin(y, jnp.asarray(left_out, y.dtype))
    correct, count = _sum_keys(name)
    sums[correct] = jnp.sum(scored & hits).astype(jnp.float32)
    sums[count] = jnp.sum(scored).astype(jnp.float32)
  sums["num_examples"] = jnp.sum(mask).astype(jnp.float32)
  return sums


def _ratio(total: float, count: float) -> float:
  return total / max(count, 1.0)


def summarize_sequences(totals: Mapping[str, float]) -> dict[str, float]:
  """The reported metrics from summed `sequence_metric_sums`."""
  out = {"loss": _ratio(totals["loss_sum"], totals["count"])}
  for name in SEQUENCE_ACCURACIES:
    correct, count = _sum_keys(name)
    out[name] = _ratio(totals[correct], totals[count])
  out["num_tokens"] = totals["count"]
  out["num_examples"] = totals["num_examples"]
  return out


def sequence_task(tokens: TokenIds) -> Task:
  """Next-token prediction over padded sequences (x, y int [b, T], logits [b, T, V]).

  Loss: mean cross-entropy over the non-pad targets of real examples (`sequence_loss`).
  Metrics, each over the targets of real examples:
    loss: as trained (non-pad targets);
    accuracy: non-pad targets. The `accuracy` of TFF's Shakespeare task and of Reddi et
      al. 2021's Shakespeare experiments (`MaskedCategoricalAccuracy(masked_tokens=
      [pad])`; TFF's Stack Overflow scripts call it `accuracy_with_oov`): published
      Shakespeare figures use this one.
    accuracy_no_oov: OOV targets left out too (TFF's `accuracy_no_oov`).
    accuracy_no_oov_no_eos: OOV and EOS targets left out (TFF's
      `accuracy_no_oov_or_eos`, the usual Stack Overflow figure). FedJAX's
      `accuracy_no_eos` leaves out pad and EOS only, and its `accuracy_in_vocab` also
      forbids predicting any special id; neither is computed here.
    num_tokens: non-pad targets; num_examples: sequences.
  BOS is never a target. Clients are weighted by sequences (`num_examples`), as TFF's and
  FedJAX's FedAvg weight by examples; the round's train/loss and train/accuracy are over
  non-pad targets.
  """
  if tokens.pad != 0:
    raise ValueError(
      f"tokens.pad={tokens.pad}: this package pads with id 0 (a round's "
      f"padding is zeros); number the vocabulary with pad 0."
    )

  def loss(logits, y, mask):
    return sequence_loss(logits, y, mask, pad=tokens.pad)

  def metric_sums(logits, y, mask):
    return sequence_metric_sums(logits, y, mask, tokens=tokens)

  def num_scored(y, mask):
    return jnp.sum(mask[..., None] & (y != tokens.pad))

  return Task("sequence", loss, metric_sums, summarize_sequences, num_scored, tokens)


# --- the models ------------------------------------------------------------------------


def _keras_embedding_init(key, shape, dtype=jnp.float32):
  return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def recurrent_layer(features: int, name: str) -> nn.Module:
  """An LSTM layer over time: [b, T, d] -> [b, T, features].

  `models.lstm.LSTM`: the input projections of all steps in one matrix product, one
  fused recurrent product a step, and a hand-written backward pass; Keras' initializers
  including the forget-gate bias of 1. The one place the LSTM form is chosen, for its
  speed: on CPU it ran the char LSTM's step faster than Flax's `nn.RNN` of
  `OptimizedLSTMCell` (`python -m benchmarks.lstm_forms`; benchmarks/RESULTS.md,
  "Shakespeare LSTM step forms").
  """
  return LSTM(features, name=name)


class LSTMLanguageModel(nn.Module):
  """Embedding - LSTM layers - optional dense projection - dense to `vocab_size` logits."""

  vocab_size: int
  embed_size: int
  hidden_sizes: tuple[int, ...]
  projection: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # Ids may arrive as floats (a shape-only probe); embedding needs integers.
    h = nn.Embed(
      self.vocab_size, self.embed_size, embedding_init=_keras_embedding_init, name="embedding"
    )(x.astype(jnp.int32))
    for i, features in enumerate(self.hidden_sizes):
      h = recurrent_layer(features, name=f"lstm_{i}")(h)
    dense = lambda n, name: nn.Dense(n, kernel_init=nn.initializers.glorot_uniform(), name=name)
    if self.projection is not None:
      h = dense(self.projection, "projection")(h)
    return dense(self.vocab_size, "logits")(h)


def _language_model(
  module: LSTMLanguageModel, input_shape, num_classes: int, num_oov_buckets: int, what: str
) -> Model:
  input_shape = tuple(input_shape)
  if len(input_shape) != 1:
    raise ValueError(
      f"{what} reads token sequences [T]; this data has examples of shape "
      f"{input_shape}: pick a model for images, or token data."
    )
  words = num_classes - num_oov_buckets - 3
  if words < 1:
    raise ValueError(
      f"{what}: num_classes={num_classes} leaves no words besides pad, BOS, "
      f"EOS and {num_oov_buckets} OOV id(s)."
    )
  task = sequence_task(tff_token_ids(words, num_oov_buckets))
  return from_flax(module, input_shape, num_classes)._replace(task=task)


@register_model("char_lstm")
def char_lstm(
  num_classes: int = 90,
  input_shape: tuple[int, ...] = (SEQUENCE_LENGTH,),
  embed_size: int = 8,
  hidden_size: int = 256,
  num_layers: int = 2,
  num_oov_buckets: int = 1,
) -> Model:
  """Reddi et al.'s Shakespeare character LSTM (embedding 8, 2 x LSTM 256, dense).

  The sequence task's ids are TFF's layout for `num_classes` logits
  (`text.tff_token_ids`: pad 0, OOV, BOS, EOS last), as `load_shakespeare` produces; for
  other ids use `model._replace(task=sequence_task(data.tokens))`.
  """
  module = LSTMLanguageModel(num_classes, embed_size, (hidden_size,) * num_layers)
  return _language_model(module, input_shape, num_classes, num_oov_buckets, "char_lstm")


@register_model("word_lstm")
def word_lstm(
  num_classes: int = 10_004,
  input_shape: tuple[int, ...] = (20,),
  embed_size: int = 96,
  hidden_size: int = 670,
  num_oov_buckets: int = 1,
) -> Model:
  """Reddi et al.'s Stack Overflow next-word LSTM (embedding 96, LSTM 670, dense 96,
  dense to the vocabulary); ids as in `char_lstm`."""
  module = LSTMLanguageModel(num_classes, embed_size, (hidden_size,), projection=embed_size)
  return _language_model(module, input_shape, num_classes, num_oov_buckets, "word_lstm")
