"""models/zoo.py: the FedAvg CNN and MLP, the CNN's layer forms, the registry of names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen

from fedjax_compress import models


def test_fedavg_cnn_parameter_counts():
  count = lambda m: models.num_parameters(jax.eval_shape(m.init, jax.random.key(0)))
  assert count(models.create_model("cnn", 10)) == 1_663_370
  assert count(models.create_model("cnn", 62)) == 1_690_046
  assert count(models.create_model("mlp", 10)) == 199_210


@pytest.mark.slow
@pytest.mark.parametrize("form", ["shifted", "patches", "reference"])
def test_cnn_forms_compute_the_cnn_with_its_parameters(form):
  """`cnn_shifted` and `cnn_patches` (convolutions as matrix products) and
  `cnn_reference` (Flax's pooling) are `cnn`: same params, same outputs and gradients,
  also under `vmap` over clients with their own parameters."""
  cnn, other = models.create_model("cnn", 10), models.create_model(f"cnn_{form}", 10)
  params = jax.vmap(cnn.init)(jax.random.split(jax.random.key(0), 2))
  other_params = jax.vmap(other.init)(jax.random.split(jax.random.key(0), 2))
  assert jax.tree.structure(params) == jax.tree.structure(other_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other_params)):
    np.testing.assert_array_equal(a, b)
  x = jax.random.uniform(jax.random.key(1), (2, 5, 28, 28, 1))
  y = jnp.arange(10)[:5]
  mask = jnp.ones(5, bool)

  def loss_and_grads(model):
    fn = jax.value_and_grad(lambda p, x: models.masked_loss(model.apply(p, x), y, mask))
    return jax.jit(jax.vmap(fn))(params, x)

  (loss_a, grads_a), (loss_b, grads_b) = loss_and_grads(cnn), loss_and_grads(other)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_an_unknown_layer_form_is_named():
  x = jnp.zeros((1, 28, 28, 1))
  with pytest.raises(ValueError, match="Unknown conv 'fft'; valid: \\['patches', 'shifted'"):
    models.FedAvgCNN(conv="fft").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="Unknown pool 'mean'; valid: \\['reshape', 'window'\\]"):
    models.FedAvgCNN(pool="mean").init(jax.random.key(0), x)


def test_shifted_patches_hold_each_pixels_neighbourhood():
  x = jnp.arange(2 * 4 * 5 * 3, dtype=jnp.float32).reshape(2, 4, 5, 3)
  patches = models.shifted_patches(x, (3, 3)).reshape(2, 4, 5, 3, 3, 3)
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  for i, j in [(0, 0), (2, 3), (3, 4)]:
    np.testing.assert_array_equal(patches[1, i, j], padded[1, i : i + 3, j : j + 3])


def test_max_pool_2x2_is_flax_max_pool_with_its_gradient():
  x = jax.random.normal(jax.random.key(0), (2, 6, 4, 3))
  flax_pool = lambda x: linen.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
  np.testing.assert_array_equal(models.max_pool_2x2(x), flax_pool(x))
  cotangent = jax.random.normal(jax.random.key(1), (2, 3, 2, 3))
  grad = lambda pool: jax.vjp(pool, x)[1](cotangent)[0]
  np.testing.assert_array_equal(grad(models.max_pool_2x2), grad(flax_pool))


def test_max_pool_2x2_names_an_odd_image_size_and_the_fix():
  with pytest.raises(ValueError, match=r"even height and width.*\[1, 7, 6, 2\].*pool='window'"):
    models.max_pool_2x2(jnp.zeros((1, 7, 6, 2)))
  with pytest.raises(ValueError, match=r"images \[\.\.\., H, W, C\]; got shape \(4, 4\)"):
    models.shifted_patches(jnp.zeros((4, 4)), (3, 3))


def test_built_in_models_are_registered_with_explicit_arguments():
  from fedjax_compress import registry
  from fedjax_compress.models import zoo

  assert {"cnn", "cnn_shifted", "cnn_patches", "cnn_reference", "mlp", "cifar_cnn"} <= set(
    models.model_names()
  )
  assert not hasattr(zoo, "_MODULES")
  count = lambda m: models.num_parameters(jax.eval_shape(m.init, jax.random.key(0)))
  mlp = models.model_registry.create("mlp", {"hidden": 7}, num_classes=3, input_shape=(4, 4, 1))
  assert mlp.input_shape == (4, 4, 1) and mlp.num_classes == 3
  assert count(mlp) == (16 * 7 + 7) + (7 * 7 + 7) + (7 * 3 + 3)
  assert count(models.create_model("mlp", 3, (4, 4, 1), hidden=7)) == count(mlp)
  with pytest.raises(
    registry.ComponentError,
    match=r"'hiden' is not an argument of model "
    r"'mlp' \(did you mean 'hidden'\?\)",
  ):
    models.model_registry.create("mlp", {"hiden": 7}, num_classes=3, input_shape=(4,))
  with pytest.raises(registry.ComponentError, match="'num_classes' is set by the run"):
    models.model_registry.create("mlp", {"num_classes": 7}, num_classes=3, input_shape=(4,))
  with pytest.raises(ValueError, match=r"unknown model 'cnnn' \(did you mean 'cnn'\?\)"):
    models.create_model("cnnn", 10)
  reference = models.create_model("cnn_reference", 10)
  assert count(reference) == 1_663_370


def test_register_model_as_a_call_and_as_a_decorator():
  def build(num_classes: int, width: int = 3) -> models.Model:
    return models.from_flax(linen.Dense(num_classes), (width,), num_classes)

  try:
    assert models.register_model("test_only_dense", build) is build

    @models.register_model("test_only_decorated")
    def decorated(num_classes: int, input_shape: tuple[int, ...]) -> models.Model:
      return models.from_flax(linen.Dense(num_classes), input_shape, num_classes)

    assert {"test_only_dense", "test_only_decorated"} <= set(models.model_names())
    # A factory gets the run's arguments that its signature names, and nothing else.
    model = models.create_model("test_only_dense", 4, (99,), width=5)
    assert model.input_shape == (5,) and model.num_classes == 4
    assert models.create_model("test_only_decorated", 2, (6,)).input_shape == (6,)
  finally:
    for name in ("test_only_dense", "test_only_decorated"):
      models.model_registry._factories.pop(name, None)  # pylint: disable=protected-access
