"""Reddi et al. 2021's EMNIST-62 CNN with dropout (models/reddi.py): its shape, dropout in
training only. (The config's run: tests/experiments/test_task_configs.py.)"""

import jax
import numpy as np
import optax
import pytest

from fedjax_compress import learning, models
from fedjax_compress.data import pipeline
from tests.conftest import synthetic_data


def test_cnn_dropout_is_reddi_et_als_cnn():
  count = lambda m: models.num_parameters(jax.eval_shape(m.init, jax.random.key(0)))
  assert count(models.create_model("cnn_dropout", 62)) == 1_206_590
  assert count(models.create_model("cnn_dropout", 10)) == 1_199_882
  model = models.create_model("cnn_dropout", 62)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  kernels = {k: v["kernel"].shape for k, v in shapes.items()}
  assert kernels == {
    "Conv_0": (3, 3, 1, 32),
    "Conv_1": (3, 3, 32, 64),
    "Dense_0": (12 * 12 * 64, 128),
    "Dense_1": (128, 62),
  }
  with pytest.raises(ValueError, match="dense_dropout=1.0 is invalid"):
    models.create_model("cnn_dropout", 62, dense_dropout=1.0)


def test_dropout_is_drawn_from_the_step_key_in_training_only():
  model = models.create_model("cnn_dropout", 62)
  params = model.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  apply = jax.jit(model.apply, static_argnames="train")
  a = apply(params, x, train=True, rng=jax.random.key(2))
  b = apply(params, x, train=True, rng=jax.random.key(3))
  assert a.shape == (3, 62) and not np.allclose(a, b)
  np.testing.assert_array_equal(a, apply(params, x, train=True, rng=jax.random.key(2)))
  evaluation = apply(params, x, train=False, rng=jax.random.key(2))
  np.testing.assert_array_equal(evaluation, apply(params, x, train=False, rng=jax.random.key(3)))
  assert not np.allclose(evaluation, a)


@pytest.mark.parametrize("rates,differ", [((0.25, 0.5), True), ((0.0, 0.0), False)])
def test_federated_training_applies_dropout(rates, differ):
  """The same round with two round keys: different updates with dropout, the same without
  (the batches do not depend on the key)."""
  data = synthetic_data([5, 7], num_classes=62)
  model = models.create_model("cnn_dropout", 62, conv_dropout=rates[0], dense_dropout=rates[1])
  process = learning.fed_avg(model, optax.sgd(0.1), optax.sgd(1.0), strategy="sequential")
  state = process.init(jax.random.key(0))
  batch = pipeline.round_batch(data, data.client_ids, batch_size=4, seed=0, round_num=1)
  one, _ = process.next(state, batch, jax.random.key(1))
  two, _ = process.next(state, batch, jax.random.key(2))
  same = all(
    np.array_equal(a, b) for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params))
  )
  assert same != differ
