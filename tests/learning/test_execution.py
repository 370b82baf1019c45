"""Execution strategies: `sharded` over several devices, padding, compile counts."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_compress import aggregators, compression, learning
from fedjax_compress.data import pipeline
from fedjax_compress.learning import execution, sharding

ROOT = Path(__file__).resolve().parents[2]


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)] + [np.zeros(0)])


def _rounds(model, batches, strategy, aggregator, rounds=2):
  process = learning.fed_avg(
    model, optax.sgd(0.05), optax.sgd(1.0), strategy=strategy, aggregator=aggregator, chunk_size=2
  )
  state = process.init(jax.random.key(0))
  history = []
  for r in range(rounds):
    state, metrics = process.next(state, batches[r % len(batches)], jax.random.key(r + 1))
    history.append(metrics)
  return state, history


def assert_same_rounds(a, b):
  """Same parameters and aggregator state (allclose), same metrics, identical bits."""
  (state_a, metrics_a), (state_b, metrics_b) = a, b
  np.testing.assert_allclose(_flat(state_a.params), _flat(state_b.params), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
    _flat(state_a.aggregator_state), _flat(state_b.aggregator_state), rtol=1e-5
  )
  for ma, mb in zip(metrics_a, metrics_b):
    assert set(ma) == set(mb)
    for key in ma:
      if key.endswith("_bits") or key.startswith("train/num"):
        assert ma[key] == mb[key], key
      else:
        np.testing.assert_allclose(ma[key], mb[key], rtol=1e-5, atol=1e-6, err_msg=key)


# Run in a fresh interpreter: the device count is fixed when jax starts.
EIGHT_DEVICES = """
import sys
sys.path[:0] = [{root!r}, {here!r}]
import jax, optax
from tests.conftest import TinyCNN, synthetic_data
from fedjax_compress import aggregators, models
from fedjax_compress.data import pipeline
from fedjax_compress.learning import execution
from test_execution import _rounds, assert_same_rounds
assert jax.device_count() == 8, jax.devices()
assert execution.resolve("auto", "gpu") == "sharded"
model = models.from_flax(TinyCNN(), (28, 28, 1), 10)
data = synthetic_data([23, 41, 7, 30, 18, 52, 9, 14])
for clients, agg in ((5, aggregators.compression_aggregator(threshold=100)),  # padded to 8
                     (8, aggregators.float32_mean())):                        # no padding
  batches = [pipeline.round_batch(data, data.client_ids[r:r + clients], batch_size=8, seed=r)
             for r in range(2)]
  reference = _rounds(model, batches, "sequential", agg)
  sharded = _rounds(model, batches, "sharded", agg)
  assert sharded[0].params["Dense_0"]["kernel"].sharding.mesh.size == 8
  assert_same_rounds(sharded, reference)
  print("ok", clients)
"""


@pytest.mark.slow
def test_sharded_over_eight_devices_equals_sequential():
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
  }
  script = EIGHT_DEVICES.format(root=str(ROOT), here=str(Path(__file__).resolve().parent))
  result = subprocess.run(
    [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-4000:]
  assert result.stdout.split() == ["ok", "5", "ok", "8"]


def test_sharded_on_one_device_equals_sequential(tiny_model, small_data):
  batches = [
    pipeline.round_batch(small_data, small_data.client_ids[r : r + 3], batch_size=8, seed=r)
    for r in range(2)
  ]
  agg = aggregators.robust_aggregator(zeroing=False)
  assert_same_rounds(
    _rounds(tiny_model, batches, "sharded", agg), _rounds(tiny_model, batches, "sequential", agg)
  )


def test_auto_strategy_is_sequential_on_cpu_and_chunked_elsewhere():
  assert execution.resolve("auto", "cpu") == "sequential"
  assert execution.resolve("auto", "gpu") == "chunked"
  assert execution.resolve("auto", "tpu") == "chunked"
  with pytest.raises(ValueError, match="valid"):
    execution.resolve("fast")


def test_auto_picks_sharded_for_several_accelerators_or_processes():
  assert execution.resolve("auto", "gpu", device_count=8, process_count=1) == "sharded"
  assert execution.resolve("auto", "tpu", device_count=1, process_count=1) == "chunked"
  assert execution.resolve("auto", "cpu", device_count=8, process_count=1) == "sequential"
  assert execution.resolve("auto", "cpu", device_count=2, process_count=2) == "sharded"


def test_pad_clients_adds_masked_clients():
  mask = np.ones((5, 2, 3), bool)
  padded = sharding.pad_clients(mask, 4)
  assert padded.shape == (8, 2, 3) and padded[:5].all() and not padded[5:].any()
  assert sharding.pad_clients(mask, 5) is mask


def _updates(num_clients, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "w": jnp.asarray(rng.normal(size=(num_clients, 300)), jnp.float32),
    "b": jnp.asarray(rng.normal(size=(num_clients, 4)), jnp.float32),
  }


def test_a_zero_weight_client_changes_the_mean_not_but_a_quantile_estimate():
  """Why the sharded round cuts padded clients off before the aggregator."""
  updates, weights = _updates(3), jnp.asarray([3.0, 1.0, 2.0])
  padded = jax.tree.map(lambda x: jnp.concatenate([x, jnp.zeros((1,) + x.shape[1:])]), updates)
  padded_weights = jnp.concatenate([weights, jnp.zeros(1)])
  key = jax.random.key(0)
  mean = aggregators.float32_mean()
  state = mean.init(jax.tree.map(lambda x: x[0], updates))
  apply = jax.jit(mean.apply)
  a, _, _ = apply(state, updates, weights, key)
  b, _, _ = apply(state, padded, padded_weights, key)
  np.testing.assert_allclose(_flat(a), _flat(b), rtol=1e-6)
  # Clipping's quantile estimate counts the padded client (its norm 0 is "below").
  clip = aggregators.compression_aggregator(threshold=100)
  state = clip.init(jax.tree.map(lambda x: x[0], updates))
  apply = jax.jit(clip.apply)
  _, sa, _ = apply(state, updates, weights, key)
  _, sb, _ = apply(state, padded, padded_weights, key)
  assert not np.allclose(_flat(sa), _flat(sb))


def test_a_run_stops_compiling_after_its_first_rounds(tmp_path, no_persistent_compilation_cache):
  from configs import default  # pylint: disable=import-outside-toplevel
  from experiments import train  # pylint: disable=import-outside-toplevel

  config = default.get_config()
  config.model.name, config.rounds, config.clients_per_round = "mlp", 6, 4
  config.eval_every = 1  # every round has the same programs
  config.checkpoint_every = 0
  compiles = [r["compiles"] for r in train.train_and_evaluate(config, str(tmp_path))]
  assert compiles[0] > 0
  assert compiles[1:] == [compiles[1]] * 5, compiles


def test_compile_count_counts_compilations(no_persistent_compilation_cache):
  before = execution.compile_count()
  f = jax.jit(lambda x: x * 3 + 1)
  f(np.ones(7, np.float32))
  f(np.ones(7, np.float32))
  assert execution.compile_count() == before + 1
  f(np.ones(8, np.float32))
  assert execution.compile_count() == before + 2


@pytest.mark.parametrize("weighting", ["num_examples", "uniform"])
def test_streamed_default_mean_equals_the_stacked_mean(tiny_model, small_data, weighting):
  """Under split strategies the default aggregator sums clients as they finish."""
  batches = [
    pipeline.round_batch(small_data, small_data.client_ids[r : r + 5], batch_size=8, seed=r)
    for r in range(2)
  ]

  def run(strategy, aggregator):
    process = learning.fed_avg(
      tiny_model,
      optax.sgd(0.05),
      optax.sgd(1.0),
      strategy=strategy,
      aggregator=aggregator,
      chunk_size=2,
      client_weighting=weighting,
    )
    state = process.init(jax.random.key(0))
    history = []
    for r, batch in enumerate(batches):
      state, metrics = process.next(state, batch, jax.random.key(r + 1))
      history.append(metrics)
    return state, history

  stacked = run("sequential", aggregators.float32_mean())
  for strategy in ("sequential", "chunked"):
    assert_same_rounds(run(strategy, None), stacked)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [2, 3])
def test_client_threads_change_nothing_bit_for_bit(tiny_model, small_data, threads):
  """Clients trained at once on host threads, folded in cohort order: the same bits."""
  batch = pipeline.round_batch(small_data, small_data.client_ids, batch_size=8, seed=1)

  def run(client_threads):
    aggregator = aggregators.float32_mean(
      aggregators.error_feedback(compression.drive(), kind="ef")
    )
    process = learning.fed_avg(
      tiny_model,
      optax.sgd(0.05),
      optax.sgd(1.0),
      strategy="sequential",
      aggregator=aggregator,
      client_ids=small_data.client_ids,
      client_threads=client_threads,
    )
    return process.next(process.init(jax.random.key(0)), batch, jax.random.key(1))

  (one, one_metrics), (many, many_metrics) = run(1), run(threads)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
    np.testing.assert_array_equal(a, b)
  assert one_metrics == many_metrics


@pytest.mark.slow
def test_chunks_are_halved_until_they_fit_the_memory_budget(tiny_model, small_data, caplog):
  batch = pipeline.round_batch(small_data, small_data.client_ids, batch_size=8, seed=1)
  trainer = learning.client.local_sgd(tiny_model, optax.sgd(0.05))
  params = tiny_model.init(jax.random.key(0))
  add = lambda acc, context, outputs, index: (
    acc
    + sum(
      jnp.sum(d * (index[:, None] + 1).reshape((-1,) + (1,) * (d.ndim - 1)))
      for d in jax.tree.leaves(outputs.delta)
    )
  )
  keys = jax.random.split(jax.random.key(1), batch.num_clients)

  def run(budget):
    runner = execution.ChunkedClients(trainer, add, chunk_size=4, memory_budget=budget)
    total = runner(jnp.zeros(()), (), params, batch.x, batch.y, batch.mask, keys)
    return runner, float(total)

  unlimited, reference = run(None)
  assert unlimited.chunk_sizes == {batch.x.shape: 4}  # chunks of 4 and 2 clients
  args = (jnp.zeros(()), (), params, batch.x, batch.y, batch.mask, keys)
  need = {k: unlimited.chunk_bytes(args, k) for k in (1, 2, 4)}
  assert need[1] < need[2] < need[4], need
  with caplog.at_level(logging.INFO):
    fitted, total = run(need[2])
  assert fitted.chunk_sizes == {batch.x.shape: 2}
  assert "a cohort of 6 clients in chunks of 2" in caplog.text
  np.testing.assert_allclose(total, reference, rtol=1e-5)
  with pytest.raises(MemoryError, match="memory_budget_bytes"):
    run(need[1] - 1)


@pytest.mark.parametrize(
  "strategy,fix", [("chunked", "larger memory_budget_bytes"), ("vmap", "strategy='chunked'")]
)
def test_a_round_over_the_memory_budget_says_so(tiny_model, small_data, strategy, fix):
  batch = pipeline.round_batch(small_data, small_data.client_ids[:4], batch_size=8, seed=1)
  process = learning.fed_avg(
    tiny_model, optax.sgd(0.05), optax.sgd(1.0), strategy=strategy, memory_budget_bytes=1024
  )
  with pytest.raises(MemoryError, match=f"over the budget of 0.0 MiB.*{re.escape(fix)}"):
    process.next(process.init(jax.random.key(0)), batch, jax.random.key(1))
  roomy = learning.fed_avg(
    tiny_model, optax.sgd(0.05), optax.sgd(1.0), strategy=strategy, memory_budget_bytes=2**40
  )
  _, metrics = roomy.next(roomy.init(jax.random.key(0)), batch, jax.random.key(1))
  assert metrics["train/num_examples"] == int(batch.mask.sum())


@pytest.mark.parametrize(
  "kwargs,message",
  [
    (dict(chunk_size=0), "chunk_size=0 must be an int >= 1"),
    (dict(memory_budget_bytes=-5), "memory_budget_bytes=-5 must be an int >= 1"),
    (dict(memory_budget_bytes=1.5e9), "memory_budget_bytes=1500000000.0 must be an int"),
  ],
)
def test_bad_chunk_sizes_and_memory_budgets_are_named(tiny_model, kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    learning.fed_avg(tiny_model, optax.sgd(0.05), optax.sgd(1.0), **kwargs)
