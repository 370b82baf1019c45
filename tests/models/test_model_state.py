"""Models with dropout and state (BatchNorm) through `from_flax`, `fed_avg` and evaluation."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

from fedjax_compress import aggregators, learning, models
from fedjax_compress.data import pipeline
from fedjax_compress.data.federated import FederatedData

SHAPE, CLASSES, LR = (3, 4, 1), 5, 0.1


def _data(sizes=(7, 13, 4, 9), seed=0) -> FederatedData:
  rng = np.random.default_rng(seed)
  clients = {
    f"client_{i:02d}": (
      rng.normal(size=(n, *SHAPE)).astype(np.float32) * 2 + 1,
      rng.integers(0, CLASSES, n).astype(np.int32),
    )
    for i, n in enumerate(sizes)
  }
  return FederatedData(clients, CLASSES, "tiny")


class LinenNet(nn.Module):
  """Dense - BatchNorm - relu - Dropout - Dense; `train` drives both."""

  dropout: float = 0.5
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(6)(x.reshape((x.shape[0], -1)))
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(x))
    return nn.Dense(CLASSES)(x)


class NnxNet(nnx.Module):
  """The same network in NNX."""

  def __init__(self, rngs: nnx.Rngs, dropout: float = 0.5, batch_norm: bool = True):
    self.dense = nnx.Linear(int(np.prod(SHAPE)), 6, rngs=rngs)
    self.bn = nnx.BatchNorm(6, momentum=0.5, rngs=rngs) if batch_norm else None
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.out = nnx.Linear(6, CLASSES, rngs=rngs)

  def __call__(self, x):
    x = self.dense(x.reshape((x.shape[0], -1)))
    if self.bn is not None:
      x = self.bn(x)
    return self.out(self.drop(nnx.relu(x)))


def linen_model(**kw) -> models.Model:
  return models.from_flax(LinenNet(**kw), SHAPE, CLASSES)


def nnx_model(**kw) -> models.Model:
  return models.from_flax(lambda rngs: NnxNet(rngs, **kw), SHAPE, CLASSES)


FLAVOURS = {"linen": linen_model, "nnx": nnx_model}


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)] + [np.zeros(0)])


def _forward(model, params, state, x, *, train, rng=None):
  if models.is_stateful(model):
    return model.apply_with_state(params, state, x, train=train, rng=rng)[0]
  return model.apply(params, x, train=train, rng=rng)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_dropout_acts_in_training_only(flavour):
  for model in (FLAVOURS[flavour](batch_norm=False), FLAVOURS[flavour]()):
    params = model.init(jax.random.key(0))
    state = model.init_state(jax.random.key(0)) if models.is_stateful(model) else ()
    x = jax.random.normal(jax.random.key(1), (8, *SHAPE))
    train = jax.jit(lambda p, s, x, k: _forward(model, p, s, x, train=True, rng=k))
    evaluate = jax.jit(lambda p, s, x, k: _forward(model, p, s, x, train=False, rng=k))
    a, b = train(params, state, x, jax.random.key(2)), train(params, state, x, jax.random.key(3))
    assert not np.allclose(a, b)  # dropout draws from rng
    np.testing.assert_array_equal(a, train(params, state, x, jax.random.key(2)))
    np.testing.assert_array_equal(
      evaluate(params, state, x, jax.random.key(2)), evaluate(params, state, x, jax.random.key(3))
    )


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_batch_norm_state_is_explicit(flavour):
  model = FLAVOURS[flavour](dropout=0.0)
  assert models.is_stateful(model)
  assert not models.is_stateful(linen_model(batch_norm=False))
  assert not models.is_stateful(nnx_model(batch_norm=False))
  params, state = model.init(jax.random.key(0)), model.init_state(jax.random.key(0))
  means = [v for path, v in jax.tree_util.tree_leaves_with_path(state) if "mean" in str(path)]
  assert len(means) == 1 and means[0].shape == (6,)
  x = jax.random.normal(jax.random.key(1), (8, *SHAPE)) + 3.0
  _, new = model.apply_with_state(params, state, x, train=True, rng=jax.random.key(2))
  assert jax.tree.structure(new) == jax.tree.structure(state)
  assert not np.allclose(_flat(new), _flat(state))
  # Evaluation reads the running statistics and returns the state as given.
  logits_a, same = model.apply_with_state(params, state, x, train=False)
  logits_b, _ = model.apply_with_state(params, new, x, train=False)
  assert same is state and not np.allclose(logits_a, logits_b)
  with pytest.raises(TypeError, match="apply_with_state"):
    model.apply(params, x)


def _hand_client(model, params, state, x, y, mask):
  """A client's local SGD written out: its final parameters and model state."""
  for b in range(x.shape[0]):
    if not mask[b].any():
      continue

    def loss(p):
      logits, new = model.apply_with_state(p, state, x[b], train=True, rng=None)
      return models.masked_loss(logits, y[b], mask[b]), new

    (_, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
    params = jax.tree.map(lambda p, g: p - LR * g, params, grads)
    state = new_state
  return params, state


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("weighting", ["num_examples", "uniform"])
def test_server_state_is_the_weighted_mean_of_the_clients_states(flavour, weighting):
  model = FLAVOURS[flavour](dropout=0.0)
  data = _data()
  ids = ["client_00", "client_01", "client_02"]
  batch = pipeline.round_batch(data, ids, batch_size=4, seed=1)
  process = learning.fed_avg(
    model, optax.sgd(LR), optax.sgd(1.0), strategy="sequential", client_weighting=weighting
  )
  state = process.init(jax.random.key(0))
  new, _ = process.next(state, batch, jax.random.key(1))
  finals = [
    _hand_client(model, state.params, state.model_state, batch.x[c], batch.y[c], batch.mask[c])[1]
    for c in range(3)
  ]
  weights = batch.mask.sum(axis=(1, 2)) if weighting == "num_examples" else np.ones(3)
  expected = jax.tree.map(lambda *s: np.average(np.stack(s), axis=0, weights=weights), *finals)
  assert not np.allclose(_flat(new.model_state), _flat(state.model_state))
  np.testing.assert_allclose(_flat(new.model_state), _flat(expected), rtol=1e-5, atol=1e-6)
  assert jax.tree.structure(new.model_state) == jax.tree.structure(state.model_state)


def test_model_state_bits_are_counted_both_ways():
  model = linen_model()
  data = _data()
  batch = pipeline.round_batch(data, data.client_ids[:3], batch_size=4, seed=0)
  process = learning.fed_avg(model, optax.sgd(LR), optax.sgd(1.0))
  state = process.init(jax.random.key(0))
  _, metrics = process.next(state, batch, jax.random.key(1))
  num_params = models.num_parameters(state.params)
  state_bits = 2 * 6 * 32  # mean and var of 6 features, float32
  assert aggregators.payload_bits(state.model_state) == state_bits
  assert metrics["round_update_bits"] == 3 * 32 * num_params
  # Per client: the update, its weight (float32), 4 float32 metrics and the state.
  assert metrics["round_aggregated_bits"] == 3 * (32 * num_params + 32 + 4 * 32 + state_bits)
  assert metrics["round_broadcasted_bits"] == 3 * (32 * num_params + state_bits)


def _two_rounds(model, strategy, **kw):
  data = _data((7, 13, 4, 9, 11))
  process = learning.fed_avg(
    model, optax.sgd(LR), optax.sgd(1.0), strategy=strategy, chunk_size=2, **kw
  )
  state = process.init(jax.random.key(0))
  history = []
  for r in range(2):
    batch = pipeline.round_batch(
      data, data.client_ids[r : r + 3], batch_size=4, seed=r, pad_batches_to=4
    )  # one shape: one compilation
    state, metrics = process.next(state, batch, jax.random.key(r + 1))
    history.append(metrics)
  return state, history


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_strategies_agree_on_a_stateful_model(flavour):
  model = FLAVOURS[flavour]()  # dropout too: the per-step keys must agree
  # (Compilation dominates: the NNX flavour skips the strategies that only move data.)
  strategies = ("sequential", "vmap", "chunked") + (("sharded",) if flavour == "linen" else ())
  runs = {s: _two_rounds(model, s, client_threads=1) for s in strategies}
  if flavour == "linen":
    runs["threads"] = _two_rounds(model, "sequential", client_threads=3)
  ref_state, ref_history = runs["sequential"]
  for strategy, (state, history) in runs.items():
    np.testing.assert_allclose(
      _flat(state.params), _flat(ref_state.params), rtol=1e-4, atol=1e-5, err_msg=strategy
    )
    np.testing.assert_allclose(
      _flat(state.model_state), _flat(ref_state.model_state), rtol=1e-5, atol=1e-6, err_msg=strategy
    )
    for metrics, ref in zip(history, ref_history):
      for key in ref:
        if key.endswith("_bits"):
          assert metrics[key] == ref[key], (strategy, key)
      np.testing.assert_allclose(metrics["train/loss"], ref["train/loss"], rtol=1e-5)
  if "threads" in runs:  # threads change nothing, bit for bit
    np.testing.assert_array_equal(
      _flat(runs["threads"][0].model_state), _flat(ref_state.model_state)
    )


# Run in a fresh interpreter: the device count is fixed when jax starts.
FOUR_DEVICES = """
import sys
sys.path[:0] = [{root!r}, {here!r}]
import jax, numpy as np
import test_model_state as t
assert jax.device_count() == 4, jax.devices()
model = t.linen_model()
(a, ha), (b, hb) = (t._two_rounds(model, s, client_threads=1) for s in ("sharded", "sequential"))
np.testing.assert_allclose(t._flat(a.model_state), t._flat(b.model_state), rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(t._flat(a.params), t._flat(b.params), rtol=1e-4, atol=1e-5)
assert [m["round_aggregated_bits"] for m in ha] == [m["round_aggregated_bits"] for m in hb]
print("ok")
"""


@pytest.mark.slow
def test_sharded_with_padded_clients_agrees_on_a_stateful_model():
  """3 clients on 4 devices: one padded client, cut off before the state's mean."""
  root = Path(__file__).resolve().parents[2]
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
  }
  script = FOUR_DEVICES.format(root=str(root), here=str(Path(__file__).resolve().parent))
  result = subprocess.run(
    [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-4000:]
  assert result.stdout.split() == ["ok"]


@pytest.mark.parametrize("strategy", ["sequential", "vmap"])
def test_padded_batches_leave_the_model_state_unchanged(strategy):
  model = linen_model()
  data = _data()
  ids = ["client_01", "client_03"]
  process = learning.fed_avg(model, optax.sgd(LR), optax.sgd(1.0), strategy=strategy)
  tight = pipeline.round_batch(data, ids, batch_size=4, seed=2)
  padded = pipeline.round_batch(data, ids, batch_size=4, seed=2, pad_batches_to=8)
  assert padded.x.shape[1] == 8 > tight.x.shape[1]
  state = process.init(jax.random.key(0))
  a, _ = process.next(state, tight, jax.random.key(1))
  b, _ = process.next(state, padded, jax.random.key(1))
  np.testing.assert_array_equal(_flat(a.model_state), _flat(b.model_state))
  np.testing.assert_array_equal(_flat(a.params), _flat(b.params))


def test_fed_sgd_carries_the_model_state():
  model = linen_model(dropout=0.0)
  data = _data()
  batch = pipeline.round_batch(data, ["client_00"], batch_size=4, seed=0)
  process = learning.fed_avg(model, optax.sgd(LR), optax.sgd(LR), fed_sgd=True)
  state = process.init(jax.random.key(0))
  new, _ = process.next(state, batch, jax.random.key(1))
  model_state = state.model_state
  for b in range(batch.x.shape[1]):
    if batch.mask[0, b].any():
      _, model_state = model.apply_with_state(state.params, model_state, batch.x[0, b], train=True)
  np.testing.assert_allclose(_flat(new.model_state), _flat(model_state), rtol=1e-5, atol=1e-6)


def test_evaluation_uses_the_servers_model_state():
  model = linen_model()
  data = _data()
  process = learning.fed_avg(model, optax.sgd(LR), optax.sgd(1.0))
  state = process.init(jax.random.key(0))
  state, _ = process.next(
    state, pipeline.round_batch(data, data.client_ids, batch_size=4), jax.random.key(1)
  )
  evaluate = learning.evaluator(model)
  batches = pipeline.eval_batches(data, batch_size=8)
  result = evaluate(state.params, batches, state.model_state)
  x = np.concatenate([data.clients[c][0] for c in data.client_ids])
  y = np.concatenate([data.clients[c][1] for c in data.client_ids])
  logits, _ = model.apply_with_state(state.params, state.model_state, x, train=False)
  expected = models.masked_loss(logits, y, np.ones(len(y), bool))
  np.testing.assert_allclose(result["loss"], expected, rtol=1e-5)
  initial = evaluate(state.params, batches, model.init_state(jax.random.key(0)))
  assert not np.isclose(initial["loss"], result["loss"])
  with pytest.raises(ValueError, match="model_state"):
    evaluate(state.params, batches)


def test_stateless_models_have_an_empty_model_state(tiny_model):
  process = learning.fed_avg(tiny_model, optax.sgd(LR), optax.sgd(1.0))
  state = process.init(jax.random.key(0))
  assert state.model_state == () and not models.is_stateful(tiny_model)
  from experiments.checkpoint import _saved_form

  assert "model_state" not in _saved_form(state)  # older checkpoints stay readable
  assert "model_state" in _saved_form(
    learning.fed_avg(linen_model(), optax.sgd(LR), optax.sgd(1.0)).init(jax.random.key(0))
  )


def test_an_aggregator_without_bit_counters_is_named_when_built(tiny_model):
  inner = aggregators.float32_mean()

  def finish(state, partial, spec, key):
    aggregate, state, measurements = inner.finish(state, partial, spec, key)
    return aggregate, state, {k: v for k, v in measurements.items() if k != aggregators.UPLINK_BITS}

  custom = aggregators.wrap(inner, finish=finish)
  with pytest.raises(
    ValueError,
    match=r"without uplink_bits:.*base\.bit_measurements\("
    r"num_clients, uplink_bits=",
  ):
    learning.fed_avg(tiny_model, optax.sgd(LR), optax.sgd(1.0), aggregator=custom)
  bare = aggregators.wrap(
    inner, finish=lambda s, p, spec, k: (*inner.finish(s, p, spec, k)[:2], {})
  )
  with pytest.raises(ValueError, match="uplink_bits, uplink_aux_bits, downlink_aux_bits"):
    learning.fed_avg(tiny_model, optax.sgd(LR), optax.sgd(1.0), aggregator=bare)
