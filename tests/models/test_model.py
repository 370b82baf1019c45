"""models/model.py: the Flax wrappers (Linen and NNX) and the masked loss and metrics."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, nnx

from fedjax_compress import models


def test_linen_and_nnx_wrappers_compute_the_same_function():
  linen_model = models.from_flax(linen.Dense(3), (4,), 3)

  class Dense(nnx.Module):
    def __init__(self, rngs):
      self.linear = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
      return self.linear(x)

  nnx_model = models.from_flax(lambda rngs: Dense(rngs), (4,), 3)
  params = linen_model.init(jax.random.key(0))
  nnx_params = {"linear": {"kernel": params["kernel"], "bias": params["bias"]}}
  x = jnp.arange(8.0).reshape(2, 4)
  np.testing.assert_allclose(
    jax.jit(nnx_model.apply)(nnx_params, x), linen_model.apply(params, x), rtol=1e-6
  )
  a, b = nnx_model.init(jax.random.key(1)), nnx_model.init(jax.random.key(2))
  assert not np.allclose(a["linear"]["kernel"], b["linear"]["kernel"])


def test_masked_loss_ignores_padding():
  logits = jnp.array([[2.0, 0.0], [0.0, 3.0], [9.0, -9.0]])
  labels = jnp.array([0, 1, 1])
  mask = jnp.array([True, True, False])
  expected = -np.mean([jax.nn.log_softmax(logits[0])[0], jax.nn.log_softmax(logits[1])[1]])
  np.testing.assert_allclose(models.masked_loss(logits, labels, mask), expected, rtol=1e-6)
  sums = models.masked_metric_sums(logits, labels, mask)
  assert float(sums["correct"]) == 2 and float(sums["count"]) == 2
  assert float(models.masked_loss(logits, labels, jnp.zeros(3, bool))) == 0.0
