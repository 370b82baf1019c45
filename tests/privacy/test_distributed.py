"""The DDG and Skellam aggregators (privacy/distributed.py), alone and in a run.

The plan they follow (the noise and gamma for a target) is tests/privacy/test_plan.py's.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import aggregators
from fedjax_compress.compression.hadamard import padded_size
from fedjax_compress.privacy import modular
from fedjax_compress.privacy.distributed import (
  client_integers,
  distributed_dp,
  flat_size,
  server_mean,
)
from fedjax_compress.privacy.plan import make_plan

N = 6
KEY = jax.random.key(3)


def _updates(scale=0.05, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {
    "dense": jax.random.normal(k1, (N, 40, 3)) * scale,
    "bias": jax.random.normal(k2, (N, 7)) * scale,
  }


def _template(updates):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), updates)


def _aggregator(mechanism, **kw):
  args = dict(clip_norm=1.0, bits=16, clients_per_round=N, noise_multiplier=0.5)
  return distributed_dp(mechanism, **{**args, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_aggregate_is_the_decoded_modular_sum_of_the_clients_integers(mechanism):
  updates = _updates()
  agg = _aggregator(mechanism)
  template = _template(updates)
  plan = agg.privacy(template)
  mean, _, measurements = agg.apply(agg.init(template), updates, jnp.ones(N), KEY)
  # The same steps by hand: each client's integers, summed in int64, wrapped into Z_2^b.
  flat = jnp.concatenate([updates[k].reshape(N, -1) for k in sorted(updates)], axis=1)
  shared = jax.random.fold_in(KEY, 1)
  ints = [
    client_integers(plan, flat[i], jax.random.fold_in(jax.random.fold_in(KEY, 0), i), shared)[0]
    for i in range(N)
  ]
  total = np.sum(np.stack([np.asarray(v, np.int64) for v in ints]), axis=0)
  wrapped = modular.unwrap(modular.wrap(jnp.asarray(total % 2**32, jnp.uint32), 16), 16)
  assert np.array_equal(np.asarray(wrapped), total)  # nothing wrapped at 16 bits here
  expected = server_mean(plan, wrapped, flat.shape[1], shared)
  got = jnp.concatenate([mean[k].reshape(-1) for k in sorted(mean)])
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
  # Bits: b per padded coordinate, for every client, nothing else.
  d = padded_size(flat_size(template))
  assert plan.dim == d
  assert np.all(np.asarray(measurements["uplink_bits"]) == 16 * d)
  assert np.all(np.asarray(measurements["uplink_aux_bits"]) == 0)


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_error_of_the_mean_matches_the_noise_it_adds(mechanism):
  """E||mean_hat - mean||^2 = d (z C / n)^2 plus the rounding's (<= d n / 4 / (gamma n)^2)."""
  updates = _updates()
  agg = _aggregator(mechanism)
  template = _template(updates)
  plan = agg.privacy(template)
  true = jax.tree.map(lambda x: x.mean(0), updates)
  errors = []
  for t in range(8):
    mean, _, _ = agg.apply(agg.init(template), updates, jnp.ones(N), jax.random.key(t))
    errors.append(
      sum(
        float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(mean), jax.tree.leaves(true))
      )
    )
  d = plan.dim
  noise = d * (plan.noise_multiplier * plan.clip_norm / N) ** 2
  rounding = d * N / 4 / (plan.gamma * N) ** 2
  # The rotation spreads the padding's noise too, and only the first `size` coordinates
  # are kept: the expected error is size / d of the total.
  expected = (noise + rounding) * flat_size(template) / d
  # The mean of 8 draws of a sum of 127 squared Gaussians: relative sd ~ sqrt(2/127/8).
  assert abs(np.mean(errors) / expected - 1) < 5 * math.sqrt(2 / 127 / 8)


@pytest.mark.slow
def test_streaming_in_chunks_gives_the_whole_cohorts_aggregate():
  updates = _updates()
  agg = _aggregator("ddg")
  template = _template(updates)
  state = agg.init(template)
  whole, _, whole_m = agg.apply(state, updates, jnp.ones(N), KEY)
  partial = agg.start(state, template, N)
  for lo, hi in ((0, 2), (2, 5), (5, 6)):
    chunk = jax.tree.map(lambda x: x[lo:hi], updates)
    clients = aggregators.Clients(jnp.arange(lo, hi, dtype=jnp.int32))
    partial, _ = agg.accumulate(state, partial, chunk, jnp.ones(hi - lo), clients, KEY)
  chunked, _, chunked_m = agg.finish(state, partial, template, KEY)
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(whole_m["uplink_bits"], chunked_m["uplink_bits"])


def test_updates_are_clipped_and_counted():
  updates = _updates(scale=1.0)  # norms ~ 11, far above the clip
  agg = _aggregator("ddg", clip_norm=0.5)
  _, _, measurements = agg.apply(agg.init(_template(updates)), updates, jnp.ones(N), KEY)
  assert float(measurements["privacy/num_clipped"]) == N
  assert float(measurements["privacy/num_rounding_rejected"]) == 0


@pytest.mark.parametrize(
  "kwargs,match",
  [
    ({"bits": 2}, "bits=2 is too few"),
    ({"bits": 33}, "bits"),
    ({"noise_multiplier": None}, "exactly one of noise_multiplier and target_epsilon"),
    ({"noise_multiplier": 0.0}, "adds no noise"),
    ({"clip_norm": 0.0}, "clip_norm"),
    ({"bits": 24, "mechanism": "skellam"}, "above the sampler's"),
    ({"noise_multiplier": 0.01, "bits": 8}, "below the 1/2"),
  ],
)
def test_mistakes_are_one_line_value_errors(kwargs, match):
  mechanism = kwargs.pop("mechanism", "ddg")
  updates = _updates()
  with pytest.raises(ValueError, match=match) as info:
    agg = _aggregator(mechanism, **kwargs)
    agg.privacy(_template(updates))
  assert "\n" not in str(info.value)


def test_central_dp_aggregator_reports_its_plan_and_calibrates():
  agg = aggregators.create_aggregator(
    "dp",
    {"target_epsilon": 5.0, "clip_norm": 0.2},
    clients_per_round=10,
    num_clients=200,
    rounds=30,
  )
  plan = agg.privacy(None)
  assert plan.mechanism == "gaussian" and plan.epsilons()[-1] == pytest.approx(5.0, rel=2e-3)
  with pytest.raises(ValueError, match="needs the population"):
    aggregators.create_aggregator("dp", {"target_epsilon": 5.0}).privacy(None)


def _run_config(*pairs):
  from configs import default  # pylint: disable=import-outside-toplevel
  from experiments import overrides  # pylint: disable=import-outside-toplevel

  config = default.get_config()
  for key, value in (
    ("model", "mlp"),
    ("rounds", "3"),
    ("clients_per_round", "4"),
    ("eval_every", "3"),
    ("checkpoint_every", "0"),
    ("client_weighting", "uniform"),
    *pairs,
  ):
    overrides.apply(config, key, value)
  return config


@pytest.mark.slow
def test_a_private_run_logs_epsilon_round_by_round(tmp_path, capsys):
  from experiments import train  # pylint: disable=import-outside-toplevel

  # The 2NN with 20 units a layer: 16,330 parameters, 16,384 once padded for the rotation
  # (the default 200 units pad to 262,144: each round's noise and rotation cost 16x more).
  config = _run_config(
    ("model", "mlp(hidden=20)"),
    ("aggregator", "skellam(bits=14, clip_norm=0.5, target_epsilon=30.0)"),
  )
  records = train.train_and_evaluate(config, str(tmp_path))
  epsilons = [r["privacy/epsilon"] for r in records]
  assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(30.0, rel=2e-3)
  assert "Privacy: skellam" in capsys.readouterr().out
  size = 28 * 28 * 20 + 20 + 20 * 20 + 20 + 20 * 10 + 10
  # The plan's padded size, as the run's plan has it (the noise does not change it: a given
  # noise multiplier spares this test a second calibration).
  plan = make_plan(
    "skellam", size=size, clip_norm=0.5, clients_per_round=4, noise_multiplier=1.0, bits=14
  )
  assert (size, plan.dim) == (16_330, 16_384)
  assert records[0]["round_update_bits"] == 4 * 14 * plan.dim


@pytest.mark.parametrize(
  "pairs,match",
  [
    ((("client_weighting", "num_examples"),), "set --config.client_weighting=uniform"),
    ((("aggregator.bits", "10"), ("aggregator.target_epsilon", "1.0")), "out of reach"),
  ],
)
@pytest.mark.slow
def test_private_run_mistakes_stop_before_training(tmp_path, pairs, match):
  from experiments import train  # pylint: disable=import-outside-toplevel
  from experiments.build import ConfigError  # pylint: disable=import-outside-toplevel

  config = _run_config(("aggregator", "ddg(bits=16, noise_multiplier=1.0)"), *pairs)
  if any(k == "aggregator.target_epsilon" for k, _ in pairs):
    config.aggregator.noise_multiplier = None
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "metrics.jsonl").exists() or not (tmp_path / "metrics.jsonl").read_text()
