import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, nnx

from fedjax_compress import models


def test_fedavg_cnn_parameter_counts():
  count = lambda m: models.num_parameters(jax.eval_shape(m.init, jax.random.key(0)))
  assert count(models.create_model("cnn", 10)) == 1_663_370
  assert count(models.create_model("cnn", 62)) == 1_690_046
  assert count(models.create_model("mlp", 10)) == 199_210


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
  np.testing.assert_allclose(jax.jit(nnx_model.apply)(nnx_params, x), linen_model.apply(params, x),
                             rtol=1e-6)
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


def test_patch_convolutions_compute_the_cnn_with_its_parameters():
  """`cnn_patches` is the CNN with convolutions as matrix products: same params, same
  outputs and gradients, also under `vmap` over clients with their own parameters."""
  cnn, patches = models.create_model("cnn", 10), models.create_model("cnn_patches", 10)
  params = jax.vmap(cnn.init)(jax.random.split(jax.random.key(0), 2))
  assert jax.tree.structure(params) == jax.tree.structure(
      jax.vmap(patches.init)(jax.random.split(jax.random.key(0), 2)))
  x = jax.random.uniform(jax.random.key(1), (2, 5, 28, 28, 1))
  y = jnp.arange(10)[:5]
  mask = jnp.ones(5, bool)

  def loss_and_grads(model):
    fn = jax.value_and_grad(lambda p, x: models.masked_loss(model.apply(p, x), y, mask))
    return jax.jit(jax.vmap(fn))(params, x)

  (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(cnn), loss_and_grads(patches)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
