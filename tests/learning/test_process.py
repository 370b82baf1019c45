import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_compress import aggregators, learning, models
from fedjax_compress.data import pipeline

LR = 0.05


def _process(model, **kw):
  return learning.fed_avg(model, optax.sgd(LR), optax.sgd(1.0), **kw)


def _run_round(process, batch, seed=0):
  state = process.init(jax.random.key(seed))
  new_state, metrics = process.next(state, batch, jax.random.key(seed + 1))
  return state, new_state, metrics


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)] + [np.zeros(0)])


def test_one_client_fedavg_equals_local_training(tiny_model, small_data):
  batch = pipeline.round_batch(small_data, ["client_01"], batch_size=8, epochs=2, seed=3)
  state, new_state, metrics = _run_round(_process(tiny_model), batch)
  params = state.params
  for b in range(int(batch.batches_per_client[0])):
    x, y, m = batch.x[0, b], batch.y[0, b], batch.mask[0, b]
    grads = jax.grad(lambda p: models.masked_loss(tiny_model.apply(p, x), y, m))(params)
    params = jax.tree.map(lambda p, g: p - LR * g, params, grads)
  np.testing.assert_allclose(_flat(new_state.params), _flat(params), rtol=1e-5, atol=1e-6)
  assert metrics["train/num_examples"] == 2 * 41
  assert metrics["train/num_batches"] == int(np.ceil(82 / 8))


def test_weighted_mean_of_deltas_matches_numpy(tiny_model, small_data):
  ids = ["client_00", "client_02", "client_05"]
  process = _process(tiny_model, strategy="sequential")
  full = pipeline.round_batch(small_data, ids, batch_size=10, seed=1)
  state, new_state, _ = _run_round(process, full)
  deltas, counts = [], []
  for i in range(3):
    one = pipeline.RoundBatch(full.x[i : i + 1], full.y[i : i + 1], full.mask[i : i + 1])
    _, alone, _ = _run_round(process, one)
    deltas.append(_flat(alone.params) - _flat(state.params))
    counts.append(full.mask[i].sum())
  expected = np.average(np.stack(deltas), axis=0, weights=counts)
  np.testing.assert_allclose(
    _flat(new_state.params) - _flat(state.params), expected, rtol=1e-4, atol=1e-6
  )


def test_uniform_weighting_is_the_plain_mean(tiny_model, small_data):
  ids = ["client_00", "client_02"]
  batch = pipeline.round_batch(small_data, ids, batch_size=10, seed=1)
  state, weighted, _ = _run_round(_process(tiny_model), batch)
  _, uniform, _ = _run_round(_process(tiny_model, client_weighting="uniform"), batch)
  assert not np.allclose(_flat(weighted.params), _flat(uniform.params))


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_padding_with_empty_batches_changes_nothing(tiny_model, small_data, strategy):
  ids = ["client_02", "client_03"]
  process = _process(tiny_model, strategy=strategy, aggregator=aggregators.compression_aggregator())
  tight = pipeline.round_batch(small_data, ids, batch_size=8, seed=2)
  padded = pipeline.round_batch(small_data, ids, batch_size=8, seed=2, pad_batches_to=16)
  assert padded.x.shape[1] == 16 > tight.x.shape[1]
  _, a, ma = _run_round(process, tight)
  _, b, mb = _run_round(process, padded)
  np.testing.assert_array_equal(_flat(a.params), _flat(b.params))
  np.testing.assert_array_equal(_flat(a.aggregator_state), _flat(b.aggregator_state))
  assert ma == mb


@pytest.mark.slow
def test_strategies_give_the_same_round(tiny_model, small_data):
  batch = pipeline.round_batch(small_data, small_data.client_ids[:5], batch_size=8, seed=4)
  agg = aggregators.compression_aggregator(threshold=100)
  results = {
    s: _run_round(_process(tiny_model, strategy=s, aggregator=agg, chunk_size=2), batch)
    for s in ("sequential", "vmap", "chunked")
  }
  ref_state, ref_metrics = results["sequential"][1:]
  for strategy, (_, state, metrics) in results.items():
    np.testing.assert_allclose(
      _flat(state.params), _flat(ref_state.params), rtol=1e-4, atol=1e-5, err_msg=strategy
    )
    assert metrics["round_aggregated_bits"] == ref_metrics["round_aggregated_bits"]
    np.testing.assert_allclose(metrics["train/loss"], ref_metrics["train/loss"], rtol=1e-5)


def test_fed_sgd_applies_the_mean_gradient(tiny_model, small_data):
  batch = pipeline.round_batch(small_data, ["client_00", "client_04"], batch_size=5, seed=0)
  process = learning.fed_avg(tiny_model, optax.sgd(LR), optax.sgd(0.1), fed_sgd=True)
  state, new_state, _ = _run_round(process, batch)
  x = batch.x[batch.mask]
  y = batch.y[batch.mask]
  grads = jax.grad(lambda p: models.masked_loss(tiny_model.apply(p, x), y, jnp.ones(len(y), bool)))(
    state.params
  )
  expected = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)
  np.testing.assert_allclose(_flat(new_state.params), _flat(expected), rtol=1e-4, atol=1e-6)


def test_fedprox_pulls_towards_the_global_model(tiny_model, small_data):
  batch = pipeline.round_batch(small_data, ["client_05"], batch_size=4, epochs=3, seed=0)
  distance = {}
  for mu in (0.0, 10.0):
    state, new_state, _ = _run_round(_process(tiny_model, proximal_mu=mu), batch)
    distance[mu] = np.linalg.norm(_flat(new_state.params) - _flat(state.params))
  assert distance[10.0] < distance[0.0]


def test_uncompressed_bits_of_the_seed_round():
  """10 clients of the 10-class CNN: 532,278,400 bits = 507.62 Mibit each way."""
  cnn = models.create_model("cnn", 10)
  process = learning.fed_avg(cnn, optax.sgd(0.02), optax.sgd(1.0))
  state = process.init(jax.random.key(0))
  batch = pipeline.RoundBatch(
    np.zeros((10, 1, 2, 28, 28, 1), np.float32),
    np.zeros((10, 1, 2), np.int32),
    np.ones((10, 1, 2), bool),
  )
  _, metrics = process.next(state, batch, jax.random.key(1))
  assert metrics["round_update_bits"] == 532_278_400 == 10 * 1_663_370 * 32
  assert metrics["round_broadcasted_bits"] == 532_278_400
  assert f"{metrics['round_update_bits'] / 2**20:.2f}" == "507.62"
  # The weights (float32) and the training metrics (4 float32) are stated separately.
  assert metrics["round_aggregated_bits"] == 532_278_400 + 10 * (32 + 4 * 32)


def test_evaluator_counts_every_example(tiny_model, small_data):
  evaluate = learning.evaluator(tiny_model)
  batches = pipeline.eval_batches(small_data, batch_size=64)
  result = evaluate(tiny_model.init(jax.random.key(0)), batches)
  assert result["num_examples"] == small_data.total_examples
  assert 0.0 <= result["accuracy"] <= 1.0 and result["loss"] > 0


def test_labels_beyond_the_models_outputs_are_an_error_not_nan(small_data):
  """Finding 9: a 5-class model on 10-class data used to log NaN loss and run on."""
  five = models.from_flax(models.FedAvgMLP(num_classes=5, hidden=8), (28, 28, 1), 5)
  process = learning.fed_avg(five, optax.sgd(0.1), optax.sgd(1.0))
  batch = pipeline.round_batch(small_data, small_data.client_ids[:3], batch_size=8)
  with pytest.raises(ValueError, match="labels span 0..9 but the model has 5 outputs"):
    process.next(process.init(jax.random.key(0)), batch, jax.random.key(1))
