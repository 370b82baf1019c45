"""The fast LSTM (`models.lstm`) against a step-by-step reference and Flax's own cell."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from fedjax_compress.models import lstm

BATCH, STEPS, IN, HIDDEN = 3, 7, 5, 4


def _weights(seed=0):
  keys = jax.random.split(jax.random.key(seed), 5)
  x = jax.random.normal(keys[0], (BATCH, STEPS, IN))
  w_x = 0.5 * jax.random.normal(keys[1], (IN, 4 * HIDDEN))
  w_h = 0.5 * jax.random.normal(keys[2], (HIDDEN, 4 * HIDDEN))
  b = 0.5 * jax.random.normal(keys[3], (4 * HIDDEN,))
  cotangent = jax.random.normal(keys[4], (BATCH, STEPS, HIDDEN))
  return x, w_x, w_h, b, cotangent


def _layer(unroll, hand_gradient):
  """The `LSTM` module as a function of (x, w_x, w_h, b)."""
  module = lstm.LSTM(HIDDEN, unroll=unroll, hand_gradient=hand_gradient)
  return lambda x, w_x, w_h, b: module.apply(
    {"params": {"kernel_x": w_x, "kernel_h": w_h, "bias": b}}, x
  )


FORMS = [(unroll, hand) for unroll in (1, 3, STEPS) for hand in (True, False)]


@pytest.mark.parametrize("unroll,hand_gradient", FORMS)
def test_outputs_equal_reference(unroll, hand_gradient):
  x, w_x, w_h, b, _ = _weights()
  got = jax.jit(_layer(unroll, hand_gradient))(x, w_x, w_h, b)
  np.testing.assert_allclose(got, lstm.lstm_reference(x, w_x, w_h, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unroll,hand_gradient", FORMS)
def test_gradient_equals_reference(unroll, hand_gradient):
  x, w_x, w_h, b, cotangent = _weights(1)
  loss = lambda f: lambda *a: jnp.sum(f(*a) * cotangent)
  got = jax.jit(jax.grad(loss(_layer(unroll, hand_gradient)), argnums=(0, 1, 2, 3)))(x, w_x, w_h, b)
  want = jax.grad(loss(lstm.lstm_reference), argnums=(0, 1, 2, 3))(x, w_x, w_h, b)
  for name, g, w in zip(("x", "kernel_x", "kernel_h", "bias"), got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)


def test_equals_flax_optimized_lstm_cell():
  """Same weights, same outputs as `nn.RNN(nn.OptimizedLSTMCell)` (gates i, f, g, o)."""
  x, w_x, w_h, b, _ = _weights(2)
  split = lambda a: dict(zip(lstm.GATES, jnp.split(a, 4, axis=-1)))
  kx, kh, bh = split(w_x), split(w_h), split(b)
  cell = {f"i{g}": {"kernel": kx[g]} for g in lstm.GATES}
  cell.update({f"h{g}": {"kernel": kh[g], "bias": bh[g]} for g in lstm.GATES})
  flax_out = nn.RNN(nn.OptimizedLSTMCell(HIDDEN)).apply({"params": {"cell": cell}}, x)
  np.testing.assert_allclose(_layer(1, True)(x, w_x, w_h, b), flax_out, rtol=1e-5, atol=1e-6)


def test_init_shapes_and_forget_bias():
  params = lstm.LSTM(HIDDEN, forget_bias=1.0).init(
    jax.random.key(0), jnp.zeros((BATCH, STEPS, IN))
  )["params"]
  assert params["kernel_x"].shape == (IN, 4 * HIDDEN)
  assert params["kernel_h"].shape == (HIDDEN, 4 * HIDDEN)
  want = np.zeros(4 * HIDDEN)
  want[HIDDEN : 2 * HIDDEN] = 1.0  # the forget gate, second of (i, f, g, o)
  np.testing.assert_array_equal(params["bias"], want)


class _TwoLayers(nn.Module):
  """Embedding - two `LSTM` layers - dense: a tiny language model."""

  vocab: int = 11

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, 3)(tokens)
    for _ in range(2):
      x = lstm.LSTM(HIDDEN, unroll=2)(x)
    return nn.Dense(self.vocab)(x)


@pytest.mark.slow
def test_stacked_gradient_under_vmap():
  """Clients with their own parameters, vmapped: each client's gradient as alone."""
  model = _TwoLayers()
  tokens = jax.random.randint(jax.random.key(3), (2, BATCH, STEPS), 0, model.vocab)
  params = jax.vmap(lambda k: model.init(k, tokens[0]))(jax.random.split(jax.random.key(4)))
  loss = lambda p, t: jnp.mean(jax.nn.log_softmax(model.apply(p, t))[..., 0])
  batched = jax.jit(jax.vmap(jax.grad(loss)))(params, tokens)
  grad_alone = jax.jit(jax.grad(loss))  # compiled once for both clients, not run op by op
  for c in range(2):
    alone = grad_alone(jax.tree.map(lambda a: a[c], params), tokens[c])
    jax.tree.map(
      lambda g, w: np.testing.assert_allclose(g[c], w, rtol=1e-5, atol=1e-6), batched, alone
    )
