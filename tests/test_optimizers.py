"""optimizers.py: optimizers by name, with their own arguments checked."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_compress.optimizers import create_optimizer
from fedjax_compress.registry import ComponentError


def optimizer_steps(optimizer, grads):
  """Parameters after applying `optimizer` to `grads` in turn, from zeros."""
  params = jnp.zeros(2)
  state = optimizer.init(params)
  for g in grads:
    updates, state = optimizer.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_adam_takes_its_own_arguments():
  opt = create_optimizer("adam", {"learning_rate": 0.01, "b1": 0.5, "b2": 0.9, "eps": 1e-3})
  ref = optax.adam(0.01, b1=0.5, b2=0.9, eps=1e-3)
  grads = [jnp.array([1.0, -2.0]), jnp.array([0.5, 1.0])]
  np.testing.assert_array_equal(optimizer_steps(opt, grads), optimizer_steps(ref, grads))


@pytest.mark.parametrize(
  "name, arguments, message",
  [
    ("sgd", {"lr": 0.1}, "'lr' is not an argument of optimizer 'sgd'"),
    ("sgd", {}, "needs 'learning_rate'"),
    ("adamm", {"learning_rate": 0.1}, "unknown optimizer 'adamm'"),
    ("softmax_cross_entropy", {}, "unknown optimizer"),
    ("none", {"learning_rate": 0.1}, "takes no arguments"),
  ],
)
def test_bad_optimizers_are_named(name, arguments, message):
  with pytest.raises(ComponentError, match=message):
    create_optimizer(name, arguments)
