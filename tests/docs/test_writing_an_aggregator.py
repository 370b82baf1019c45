"""docs/writing_an_aggregator.md: its code runs as written, and its trimmed mean is right."""

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from experiments import build, overrides
from fedjax_compress import aggregators as agg
from fedjax_compress import learning
from fedjax_compress.data import pipeline

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing_an_aggregator.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(scope="module")
def doc():
  """The page's Python blocks, run in order in one namespace."""
  namespace = {}
  for index, block in enumerate(BLOCKS):
    exec(compile(block, f"writing_an_aggregator.md python block {index}", "exec"), namespace)
  return namespace


def _numpy_trimmed_mean(x: np.ndarray, trim: int) -> np.ndarray:
  return np.sort(x, axis=0)[trim : x.shape[0] - trim].mean(axis=0)


def test_the_blocks_run_and_register_the_aggregator(doc):
  assert len(BLOCKS) >= 3
  assert "trimmed_mean" in agg.aggregator_names()
  np.testing.assert_allclose(doc["aggregate"]["w"], [2.5, 2.5])
  np.testing.assert_array_equal(doc["measurements"][agg.UPLINK_BITS], [64] * 4)
  assert isinstance(doc["process"], learning.Process)


@pytest.mark.parametrize("trim", [0, 1, 2])
def test_trimmed_mean_matches_numpy_with_an_outlier_streamed_in_chunks(doc, trim):
  rng = np.random.default_rng(trim)
  clients = 7
  updates = {
    "kernel": rng.normal(size=(clients, 5, 3)).astype(np.float32),
    "bias": rng.normal(size=(clients, 3)).astype(np.float32),
  }
  updates["kernel"][4] = 1e6  # one client far off, in every coordinate
  aggregator = doc["trimmed_mean"](trim=trim)
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), updates)
  state = aggregator.init(spec)
  partial = aggregator.start(state, spec, clients)
  for lo, hi in ((0, 3), (3, 5), (5, 7)):  # three chunks, as fed_avg streams them
    chunk = jax.tree.map(lambda x: jnp.asarray(x[lo:hi]), updates)
    clients_of_chunk = agg.Clients(jnp.arange(lo, hi, dtype=jnp.int32))
    partial, _ = aggregator.accumulate(
      state, partial, chunk, jnp.ones(hi - lo), clients_of_chunk, jax.random.key(0)
    )
  aggregate, _, measurements = aggregator.finish(state, partial, spec, jax.random.key(0))
  for name, x in updates.items():
    np.testing.assert_allclose(aggregate[name], _numpy_trimmed_mean(x, trim), rtol=1e-6)
  if trim:
    assert np.abs(np.asarray(aggregate["kernel"])).max() < 10  # the outlier is trimmed
  # Every client sent 5 * 3 + 3 float32 values, and nothing else.
  np.testing.assert_array_equal(measurements[agg.UPLINK_BITS], [18 * 32] * clients)
  np.testing.assert_array_equal(measurements[agg.UPLINK_AUX_BITS], [0] * clients)
  np.testing.assert_array_equal(measurements[agg.DOWNLINK_AUX_BITS], [0] * clients)


def test_bad_trims_are_named(doc):
  with pytest.raises(ValueError, match="trim=-1 is invalid"):
    doc["trimmed_mean"](trim=-1)
  aggregator = doc["trimmed_mean"](trim=2)
  updates = {"w": jnp.ones((4, 3))}
  with pytest.raises(ValueError, match="trim=2 drops every one of 4 clients"):
    aggregator.apply(
      aggregator.init({"w": updates["w"][0]}), updates, jnp.ones(4), jax.random.key(0)
    )
  with pytest.raises(
    ValueError, match="'trimm' is not an argument of aggregator 'trimmed_mean'.*did you mean 'trim'"
  ):
    agg.create_aggregator("trimmed_mean", {"trimm": 1})


def test_fed_avg_counts_its_bits(doc, tiny_model, small_data):
  process = learning.fed_avg(
    tiny_model,
    optax.sgd(0.1),
    optax.sgd(1.0),
    aggregator=agg.create_aggregator("trimmed_mean", {"trim": 1}),
  )
  state = process.init(jax.random.key(0))
  batch = pipeline.round_batch(small_data, small_data.client_ids[:3], batch_size=8)
  new_state, metrics = process.next(state, batch, jax.random.key(1))
  assert metrics["round_update_bits"] == 3 * agg.payload_bits(state.params)
  moved = [
    np.abs(np.asarray(a) - np.asarray(b)).max()
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params))
  ]
  assert all(np.isfinite(m) for m in moved) and max(moved) > 0


def test_fed_avg_refuses_an_aggregator_without_bits_naming_the_helper(doc, tiny_model):
  silent = agg.wrap(
    doc["trimmed_mean"](1),
    finish=lambda state, held, spec, key: (jax.tree.map(lambda h: h[0], held), state, {}),
  )
  with pytest.raises(ValueError, match="bit_measurements"):
    learning.fed_avg(tiny_model, optax.sgd(0.1), optax.sgd(1.0), aggregator=silent)


def test_the_documented_config_flags_build_it(tmp_path, monkeypatch):
  (tmp_path / "my_module.py").write_text(BLOCKS[0])
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, "my_module", raising=False)
  config = default.get_config()
  # --config.aggregator.name=trimmed_mean --config.aggregator.trim=1 --config.imports=my_module
  for key, value in [
    ("aggregator.name", "trimmed_mean"),
    ("aggregator.trim", "1"),
    ("imports", "my_module"),
  ]:
    overrides.apply(config, key, value)
  bound = build.bind(config)
  assert isinstance(build.build_aggregator(config, bound, num_clients=20), agg.Aggregator)
  config.aggregator.trimm = 1
  with pytest.raises(build.ConfigError, match="'trimm' is not an argument"):
    build.bind(config)
