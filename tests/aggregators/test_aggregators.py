import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_compress import aggregators as agg
from fedjax_compress import compression, learning, models
from fedjax_compress.data import pipeline

KEY = jax.random.key(0)


def _updates(num_clients=4, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "big": jnp.asarray(rng.normal(size=(num_clients, 40, 30)), jnp.float32),
    "small": jnp.asarray(rng.normal(size=(num_clients, 7)), jnp.float32),
  }


def _apply(aggregator, updates, weights, key=KEY):
  state = aggregator.init(jax.tree.map(lambda x: x[0], updates))
  return jax.jit(aggregator.apply)(state, updates, weights, key)


def test_mean_and_sum_match_numpy():
  updates, weights = _updates(), jnp.array([1.0, 3.0, 0.5, 2.0])
  for aggregator, w, divide in [
    (agg.float32_mean(), weights, weights.sum()),
    (agg.float32_mean(weighted=False), jnp.ones(4), 4.0),
    (agg.float32_sum(), jnp.ones(4), 1.0),
  ]:
    out, _, _ = _apply(aggregator, updates, weights)
    for name, x in updates.items():
      expected = np.tensordot(np.asarray(w), np.asarray(x), axes=1) / float(divide)
      np.testing.assert_allclose(out[name], expected, rtol=1e-5, atol=1e-6)


def test_sum_before_decode_equals_decode_then_sum():
  updates, weights = _updates(5), jnp.arange(1.0, 6.0)
  stage = compression.chain(compression.hadamard(), compression.uniform_quantize(4))
  fast, _, _ = _apply(agg.encoded_mean(stage, threshold=10), updates, weights)
  slow, _, _ = _apply(
    agg.encoded_mean(stage, threshold=10, sum_before_decode=False), updates, weights
  )
  for name in updates:
    np.testing.assert_allclose(fast[name], slow[name], rtol=1e-5, atol=1e-5)


def test_sum_before_decode_really_decodes_the_sum_once():
  # A stage that claims to commute but adds 1 on decode tells the two paths apart.
  shift = compression.stateless(
    lambda x, k, s: compression.Encoded(x),
    lambda e, spec, s: e.values + 1.0,
    commutes_with_sum=True,
  )
  updates = {"w": jnp.zeros((3, 4))}
  once, _, _ = _apply(agg.encoded_sum(shift), updates, jnp.ones(3))
  each, _, _ = _apply(agg.encoded_sum(shift, sum_before_decode=False), updates, jnp.ones(3))
  np.testing.assert_array_equal(once["w"], 1.0)
  np.testing.assert_array_equal(each["w"], 3.0)


def test_threshold_and_policy_choose_the_encoded_leaves():
  updates = _updates(2)
  _, _, m = _apply(
    agg.encoded_sum(compression.uniform_quantize(8), threshold=100), updates, jnp.ones(2)
  )
  assert int(m[agg.UPLINK_BITS][0]) == (1200 * 8 + 64) + 7 * 32
  policy = lambda path, spec: compression.uniform_quantize(2) if "small" in str(path) else None
  _, _, m = _apply(agg.encoded_sum(policy), updates, jnp.ones(2))
  assert int(m[agg.UPLINK_BITS][0]) == 1200 * 32 + (32 + 64)


@pytest.mark.slow
def test_bits_equal_the_arrays_actually_produced():
  updates, weights = _updates(3), jnp.ones(3)
  stage = compression.chain(compression.hadamard(), compression.uniform_quantize(5))
  aggregator = agg.encoded_sum(stage, threshold=10)
  _, _, m = _apply(aggregator, updates, weights)
  produced = 0
  for name in updates:
    leaf = updates[name][0]
    used = compression.chain(stage) if name == "big" else compression.chain(compression.identity())
    spec = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
    enc = used.encode(used.init(spec), leaf, KEY, KEY)
    produced += sum(int(a.size) * a.dtype.itemsize * 8 for a in jax.tree.leaves(enc))
  np.testing.assert_array_equal(m[agg.UPLINK_BITS], produced)
  assert produced == math.ceil(2048 * 5 / 32) * 32 + 64 + 7 * 32


def test_encoded_sum_counts_entropy_coded_streams_at_their_length():
  """The aggregator's uplink bits are the streams' measured lengths, not their capacity."""
  n = 4096
  rng = np.random.default_rng(0)
  # Peaked data: Huffman codes it in far fewer than 8 bits per value.
  updates = {"w": jnp.asarray(rng.laplace(size=(3, n)) * 0.01, jnp.float32)}
  stage = compression.chain(
    compression.quantize_codes(8, stochastic=False), compression.entropy_code(8)
  )
  aggregator = agg.encoded_sum(stage)
  state = aggregator.init(jax.tree.map(lambda u: u[0], updates))
  _, _, m = jax.jit(aggregator.apply)(state, updates, jnp.ones(3), jax.random.key(0))
  spec = jax.ShapeDtypeStruct((n,), jnp.float32)
  chained = compression.chain(stage)
  expected = []
  for c in range(3):
    enc = chained.encode(chained.init(spec), updates["w"][c], jax.random.key(1), jax.random.key(2))
    expected.append(int(agg.measured_bits(enc)))
  np.testing.assert_array_equal(m[agg.UPLINK_BITS], expected)
  assert max(expected) < 8 * n  # shorter than fixed-width codes


def test_compression_aggregator_is_the_same_jitted_and_not():
  updates, weights = _updates(4), jnp.array([5.0, 1.0, 2.0, 2.0])
  aggregator = agg.compression_aggregator(threshold=100)
  state = aggregator.init(jax.tree.map(lambda x: x[0], updates))
  eager = aggregator.apply(state, updates, weights, KEY)
  jitted = jax.jit(aggregator.apply)(state, updates, weights, KEY)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adaptive_clipping_tracks_the_target_quantile():
  aggregator = agg.clipping(agg.float32_mean(), target_quantile=0.8, learning_rate=0.2)
  state = aggregator.init({"w": jnp.zeros(3)})
  rng = np.random.default_rng(0)
  apply = jax.jit(aggregator.apply)
  estimates = []
  for r in range(400):
    norms = rng.lognormal(mean=1.0, sigma=0.5, size=100)
    directions = rng.normal(size=(100, 3))
    updates = {
      "w": jnp.asarray(
        directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms[:, None], jnp.float32
      )
    }
    _, state, m = apply(state, updates, jnp.ones(100), jax.random.key(r))
    estimates.append(float(state.clip_norm))
  true_quantile = math.exp(1.0 + 0.5 * 0.8416)  # lognormal 0.8 quantile
  assert abs(np.mean(estimates[-100:]) / true_quantile - 1) < 0.05
  # The clipped fraction matches 1 - q.
  assert abs(float(m["clipping/num_clipped"]) / 100 - 0.2) < 0.15


def test_clipping_bounds_each_update_norm():
  updates = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4]])}
  out, _, m = _apply(
    agg.clipping(agg.float32_sum(), clip_norm=1.0, adaptive=False), updates, jnp.ones(2)
  )
  np.testing.assert_allclose(out["w"], [0.6 + 0.3, 0.8 + 0.4], rtol=1e-6)
  assert float(m["clipping/num_clipped"]) == 1


def test_zeroing_removes_nonfinite_and_large_updates():
  updates = {"w": jnp.array([[1.0, 2.0], [jnp.nan, 0.0], [jnp.inf, 1.0], [100.0, 0.0]])}
  out, state, m = _apply(agg.zeroing(agg.float32_mean(weighted=False)), updates, jnp.ones(4))
  np.testing.assert_allclose(out["w"], [0.25, 0.5])
  assert float(m["zeroing/num_zeroed"]) == 3 and float(m["zeroing/num_nonfinite"]) == 2
  assert np.isfinite(float(state.zeroing_norm))


def test_a_nan_client_does_not_poison_the_model(tiny_model, small_data):
  batch = pipeline.round_batch(small_data, small_data.client_ids[:3], batch_size=8, seed=0)
  x = batch.x.copy()
  x[1, 0, 0] = np.nan
  batch = batch._replace(x=x)
  process = learning.fed_avg(
    tiny_model, optax.sgd(0.1), optax.sgd(1.0), aggregator=agg.robust_aggregator()
  )
  state = process.init(KEY)
  state, metrics = process.next(state, batch, KEY)
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params))
  assert metrics["zeroing/num_nonfinite"] == 1


def test_dp_aggregator_adds_noise_of_the_documented_scale():
  n, clip, z = 10, 0.5, 2.0
  updates = {"w": jnp.zeros((n, 20_000))}
  out, _, _ = _apply(agg.dp_aggregator(z, n, clip_norm=clip), updates, jnp.ones(n))
  std = float(jnp.std(out["w"]))
  # The sample std of 20,000 normals is within 3% of the truth (about 6 standard errors).
  assert abs(std / (z * clip / n) - 1) < 0.03
  with pytest.raises(ValueError, match="noise_multiplier"):
    agg.dp_aggregator(-1.0, n)


@pytest.fixture(scope="module")
def seed_round():
  """One round of the seed's workload shape: 10 clients, the 10-class CNN."""
  cnn = models.create_model("cnn", 10)
  batch = pipeline.RoundBatch(
    np.zeros((10, 1, 2, 28, 28, 1), np.float32),
    np.zeros((10, 1, 2), np.int32),
    np.ones((10, 1, 2), bool),
  )

  def run(aggregator, accounting, rounds=1):
    process = learning.fed_avg(
      cnn, optax.sgd(0.02), optax.sgd(1.0), aggregator=aggregator, bit_accounting=accounting
    )
    state = process.init(KEY)
    history = []
    for r in range(rounds):
      state, metrics = process.next(state, batch, jax.random.key(r))
      history.append(metrics)
    return history

  return run


def _mibit(bits):
  """The tutorial's format: two decimals in Mibit below 1024 Mibit, then Gibit."""
  size = bits / 2**20
  return f"{size:.2f}Mibit" if size < 1024 else f"{size / 1024:.2f}Gibit"


@pytest.mark.slow
def test_tff_accounting_reproduces_the_tutorial(seed_round):
  plain = seed_round(agg.float32_mean(), "tff", rounds=2)
  assert plain[0]["round_aggregated_bits"] == 10 * (53_227_840 + 32 + 256)
  assert _mibit(plain[0]["round_aggregated_bits"]) == "507.62Mibit"
  assert f"{2 * plain[1]['round_aggregated_bits'] / 2**20:.2f}" == "1015.25"
  assert _mibit(plain[0]["round_broadcasted_bits"]) == "507.62Mibit"
  compressed = seed_round(agg.compression_aggregator(accounting="tff"), "tff")[0]
  assert compressed["round_update_bits"] == 10 * 15_357_536
  assert compressed["round_aggregated_bits"] == 153_580_160
  assert _mibit(compressed["round_aggregated_bits"]) == "146.47Mibit"
  assert _mibit(compressed["round_broadcasted_bits"]) == "507.62Mibit"


def test_exact_accounting_of_the_compressed_seed_round(seed_round):
  m = seed_round(agg.compression_aggregator(), "exact")[0]
  words = math.ceil(8 * 51_200 / 32) + math.ceil(8 * 1_605_632 / 32)
  per_client = words * 32 + 2 * 2 * 32 + 6_538 * 32
  assert m["round_update_bits"] == 10 * per_client == 134_640_000
  # Weight (32), two quantile records (1 bit each) and the 4 float32 training metrics.
  assert m["round_aggregated_bits"] == 10 * (per_client + 32 + 2 + 128)
  assert m["round_broadcasted_bits"] == 10 * (53_227_840 + 2 * 32)
