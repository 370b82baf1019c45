"""Error feedback (EF, EF21), the client-state table, streamed aggregation, downlink."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_compress import aggregators as agg
from fedjax_compress import compression, learning
from fedjax_compress.data import pipeline

KEY = jax.random.key(0)


def _inputs(rounds, clients=3, seed=0):
  rng = np.random.default_rng(seed)
  return [
    {
      "w": jnp.asarray(rng.normal(size=(clients, 64)), jnp.float32),
      "b": jnp.asarray(rng.normal(size=(clients, 5)), jnp.float32),
    }
    for _ in range(rounds)
  ]


def _run(aggregator, inputs):
  """Rounds of `aggregator` over the same clients; (aggregates, rows, last measurements)."""
  template = jax.tree.map(lambda x: x[0], inputs[0])
  state = aggregator.init(template)
  n = inputs[0]["w"].shape[0]
  rows = jax.tree.map(
    lambda r: jnp.zeros((n,) + r.shape, r.dtype), aggregator.client_init(template)
  )
  apply = jax.jit(aggregator.apply_with_clients)
  aggregates = []
  for r, updates in enumerate(inputs):
    total, state, measurements, rows = apply(state, updates, jnp.ones(n), jax.random.key(r), rows)
    aggregates.append(total)
  return aggregates, rows, measurements


def _top(fraction):
  # Deterministic and biased: what error feedback is for.
  return compression.top_k(fraction=fraction)


def test_ef_residual_telescopes():
  """sum_t C(x_t + e_t) = sum_t x_t - e_T for every client: nothing is lost, only delayed."""
  inputs = _inputs(6)
  aggregator = agg.error_feedback(_top(0.1), threshold=10, kind="ef")
  aggregates, rows, _ = _run(aggregator, inputs)
  for name in ("w", "b"):
    sent = sum(np.asarray(a[name]) for a in aggregates)
    fed = sum(np.asarray(u[name]).sum(axis=0) for u in inputs)
    np.testing.assert_allclose(sent, fed - np.asarray(rows[name]).sum(axis=0), atol=1e-4)
  # The small leaf travels as float32: no residual; the big one keeps what top-k dropped.
  np.testing.assert_array_equal(rows["b"], 0.0)
  assert float(jnp.abs(rows["w"]).max()) > 0.1


def test_ef_single_round_is_the_compressed_input_and_its_error():
  x = _inputs(1, clients=2)
  aggregator = agg.error_feedback(_top(0.25), kind="ef")
  (total,), rows, _ = _run(aggregator, x)
  w = np.asarray(x[0]["w"])
  kept = np.zeros_like(w)
  for c in range(2):
    top = np.argsort(-np.abs(w[c]))[:16]
    kept[c, top] = w[c, top]
  np.testing.assert_allclose(total["w"], kept.sum(0), atol=1e-6)
  np.testing.assert_allclose(rows["w"], w - kept, atol=1e-6)


def test_ef21_estimate_is_the_sum_of_what_was_sent():
  """g_T = sum_t C(x_t - g_t), and the aggregate of a round is sum_c g_c."""
  inputs = _inputs(5)
  aggregator = agg.error_feedback(_top(0.2), threshold=10, kind="ef21")
  aggregates, rows, _ = _run(aggregator, inputs)
  np.testing.assert_allclose(aggregates[-1]["w"], np.asarray(rows["w"]).sum(0), atol=1e-5)
  # With a constant input, EF21's estimate converges to it (top-k contracts the gap).
  constant = [inputs[0]] * 40
  _, rows, _ = _run(aggregator, constant)
  np.testing.assert_allclose(rows["w"], inputs[0]["w"], atol=1e-4)


def test_with_an_exact_stage_error_feedback_is_the_plain_sum():
  inputs = _inputs(3)
  for kind in ("ef", "ef21"):
    aggregates, rows, m = _run(agg.error_feedback(compression.identity(), kind=kind), inputs)
    np.testing.assert_allclose(
      aggregates[-1]["w"], np.asarray(inputs[-1]["w"]).sum(0), rtol=1e-5, atol=1e-5
    )
    assert int(m[agg.UPLINK_BITS][0]) == (64 + 5) * 32
  np.testing.assert_allclose(
    _run(agg.error_feedback(compression.identity()), inputs)[1]["w"], 0.0, atol=1e-6
  )


def test_ef_makes_a_biased_compressor_unbiased_over_time():
  """The running mean of what EF sends approaches the input; top-k alone stays biased."""
  inputs = _inputs(1, clients=1) * 50
  ef, _, _ = _run(agg.error_feedback(_top(0.05), kind="ef"), inputs)
  plain = agg.encoded_sum(_top(0.05))
  x = np.asarray(inputs[0]["w"][0])
  ef_mean = np.mean([np.asarray(a["w"]) for a in ef], axis=0)
  plain_out = np.asarray(
    jax.jit(plain.apply)(
      plain.init({"w": inputs[0]["w"][0], "b": inputs[0]["b"][0]}), inputs[0], jnp.ones(1), KEY
    )[0]["w"]
  )
  ef_error = np.sum((ef_mean - x) ** 2) / np.sum(x**2)
  plain_error = np.sum((plain_out - x) ** 2) / np.sum(x**2)
  assert ef_error < 0.05 * plain_error, (ef_error, plain_error)


def test_storage_dtype_rounds_the_rows_not_the_arithmetic():
  inputs = _inputs(2)
  aggregator = agg.error_feedback(_top(0.1), kind="ef", storage_dtype=jnp.bfloat16)
  _, rows, _ = _run(aggregator, inputs)
  assert rows["w"].dtype == jnp.bfloat16
  _, exact, _ = _run(agg.error_feedback(_top(0.1), kind="ef"), inputs)
  # bfloat16 keeps 8 bits of mantissa: relative error 2^-8 per stored value.
  np.testing.assert_allclose(np.asarray(rows["w"], np.float32), exact["w"], rtol=2**-7, atol=1e-2)


def test_bits_are_those_of_the_stage():
  inputs = _inputs(1)
  stage = compression.drive()
  _, _, m = _run(agg.error_feedback(stage, threshold=10), inputs)
  spec = jax.ShapeDtypeStruct((64,), jnp.float32)
  enc = stage.encode(stage.init(spec), inputs[0]["w"][0], KEY, KEY)
  assert int(m[agg.UPLINK_BITS][0]) == agg.payload_bits(enc) + 5 * 32


@pytest.mark.parametrize(
  "aggregator",
  [
    agg.encoded_mean(
      compression.chain(compression.hadamard(), compression.uniform_quantize(3)), threshold=10
    ),
    agg.compression_aggregator(threshold=10),
    agg.float32_mean(
      agg.error_feedback(
        compression.chain(compression.hadamard(), compression.eden(2)), kind="ef21"
      )
    ),
  ],
  ids=["quantized_mean", "compression", "ef21_eden"],
)
@pytest.mark.slow
def test_streaming_one_client_at_a_time_equals_the_whole_cohort(aggregator):
  updates = _inputs(1, clients=5)[0]
  weights = jnp.arange(1.0, 6.0)
  template = jax.tree.map(lambda x: x[0], updates)
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), template)
  state = aggregator.init(template)
  rows = (
    jax.tree.map(lambda r: jnp.zeros((5,) + r.shape, r.dtype), aggregator.client_init(template))
    if aggregator.client_init
    else ()
  )
  whole = aggregator.apply_with_clients(state, updates, weights, KEY, rows)
  partial = aggregator.start(state, spec, 5)
  new_rows = []
  for c in range(5):
    chunk = jax.tree.map(lambda x: x[c : c + 1], updates)
    states = jax.tree.map(lambda r: r[c : c + 1], rows)
    partial, row = aggregator.accumulate(
      state, partial, chunk, weights[c : c + 1], agg.Clients(jnp.array([c]), states), KEY
    )
    new_rows.append(row)
  streamed = aggregator.finish(state, partial, spec, KEY)
  for a, b in zip(jax.tree.leaves(whole[:3]), jax.tree.leaves(streamed)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  if rows:
    stacked = jax.tree.map(lambda *r: jnp.concatenate(r), *new_rows)
    for a, b in zip(jax.tree.leaves(whole[3]), jax.tree.leaves(stacked)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_apply_refuses_a_stateful_aggregator_with_a_clear_error():
  aggregator = agg.float32_mean(agg.error_feedback(compression.drive()))
  state = aggregator.init({"w": jnp.zeros(8)})
  with pytest.raises(ValueError, match="apply_with_clients"):
    aggregator.apply(state, {"w": jnp.zeros((2, 8))}, jnp.ones(2), KEY)


# The process: the table keyed by client id, every strategy, checkpoints.


def _ef_process(model, ids, strategy="sequential", **kw):
  aggregator = agg.float32_mean(agg.error_feedback(compression.drive(), threshold=100, kind="ef"))
  return learning.fed_avg(
    model,
    optax.sgd(0.05),
    optax.sgd(1.0),
    aggregator=aggregator,
    strategy=strategy,
    client_ids=ids,
    chunk_size=2,
    **kw,
  )


def _rounds(process, data, rounds=2):
  state = process.init(jax.random.key(0))
  history = []
  for r in range(rounds):
    ids = data.client_ids[2 * r : 2 * r + 3]
    batch = pipeline.round_batch(data, ids, batch_size=8, seed=r, round_num=r)
    state, metrics = process.next(state, batch, jax.random.key(r + 1))
    history.append(metrics)
  return state, history


def test_the_table_holds_a_row_per_client_and_changes_only_the_round_s(tiny_model, small_data):
  process = _ef_process(tiny_model, small_data.client_ids)
  state = process.init(jax.random.key(0))
  batch = pipeline.round_batch(small_data, ["client_04", "client_01"], batch_size=8)
  state, _ = process.next(state, batch, jax.random.key(1))
  table = state.client_states["Dense_0"]["kernel"]
  assert table.shape[0] == len(small_data.client_ids)
  touched = np.abs(np.asarray(table)).reshape(table.shape[0], -1).max(axis=1) > 0
  assert touched.tolist() == [i in (1, 4) for i in range(len(small_data.client_ids))]


@pytest.mark.slow
def test_every_strategy_gives_the_same_error_feedback_rounds(tiny_model, small_data):
  reference, ref_history = _rounds(_ef_process(tiny_model, small_data.client_ids), small_data)
  for strategy in ("chunked", "vmap", "sharded"):
    state, history = _rounds(_ef_process(tiny_model, small_data.client_ids, strategy), small_data)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert [h["round_update_bits"] for h in history] == [
      h["round_update_bits"] for h in ref_history
    ]


def test_a_stateful_aggregator_needs_the_client_ids(tiny_model, small_data):
  with pytest.raises(ValueError, match="client_ids"):
    _ef_process(tiny_model, None)
  process = _ef_process(tiny_model, small_data.client_ids[:2])
  batch = pipeline.round_batch(small_data, ["client_05"], batch_size=8)
  with pytest.raises(ValueError, match="client_05"):
    process.next(process.init(KEY), batch, KEY)


# The downlink.


def test_an_encoded_broadcast_is_what_clients_train_from(tiny_model, small_data):
  stage = compression.chain(compression.hadamard(), compression.uniform_quantize(4))
  broadcast = agg.encoded_broadcast(stage, threshold=100)
  process = learning.fed_avg(tiny_model, optax.sgd(0.05), optax.sgd(1.0), broadcast=broadcast)
  plain = learning.fed_avg(tiny_model, optax.sgd(0.05), optax.sgd(1.0))
  batch = pipeline.round_batch(small_data, ["client_01", "client_03"], batch_size=8)
  state = process.init(KEY)
  new_state, metrics = process.next(state, batch, jax.random.key(3))
  # The same round by hand: the clients' model is the decoded broadcast; the server adds
  # the mean delta (relative to what clients received) to its exact model.
  received, bits = broadcast.send(state.params, jax.random.fold_in(jax.random.key(3), 0xB0))
  offset = jax.tree.map(jnp.subtract, received, state.params)
  assert float(max(jnp.abs(o).max() for o in jax.tree.leaves(offset))) > 0
  from_received = plain.next(state._replace(params=received), batch, jax.random.key(3))[0]
  expected = jax.tree.map(lambda p, o: p - o, from_received.params, offset)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Bits: the dense kernel (196 * 10 = 1960 > 100) at 4 bits plus min/max, the rest float32.
  n_big = 1960
  small = sum(x.size for x in jax.tree.leaves(state.params)) - n_big
  per_client = math.ceil(2048 * 4 / 32) * 32 + 64 + small * 32
  assert int(bits) == per_client
  assert metrics["round_broadcasted_bits"] == 2 * per_client


def test_adaptive_stages_cannot_encode_the_broadcast():
  with pytest.raises(ValueError, match="Adaptive"):  # when the broadcast is built
    agg.encoded_broadcast(compression.adaptive_quantize(0.01))
  # A policy's stages are known per leaf: when the broadcast is sent.
  broadcast = agg.encoded_broadcast(lambda path, spec: compression.adaptive_quantize(0.01))
  with pytest.raises(ValueError, match="Adaptive"):
    broadcast.send({"w": jnp.ones(8)}, KEY)


def test_bad_storage_dtypes_duplicate_ids_and_thread_counts_are_named(tiny_model, small_data):
  with pytest.raises(ValueError, match="floating dtype"):
    agg.error_feedback(compression.drive(), storage_dtype=jnp.int8)
  with pytest.raises(ValueError, match="duplicate"):
    _ef_process(tiny_model, ["client_00", "client_00"])
  with pytest.raises(ValueError, match="client_threads=0"):
    learning.fed_avg(tiny_model, optax.sgd(0.1), optax.sgd(1.0), client_threads=0)
