"""A DP run's plan (privacy/plan.py): the noise and gamma for a target epsilon and a bit width."""

import jax
import jax.numpy as jnp
import pytest

from fedjax_compress import aggregators
from fedjax_compress.privacy import calibration
from fedjax_compress.privacy.plan import make_plan


def test_gamma_is_the_largest_that_fits_the_bits():
  plan = make_plan(
    "skellam", size=1000, clip_norm=0.2, clients_per_round=20, noise_multiplier=1.0, bits=14
  )
  assert (
    calibration.bits_for_modular_sum(
      clients=20,
      clip_norm=0.2,
      gamma=plan.gamma,
      dim=1024,
      noise_stddev=0.2,
      failure_probability=plan.failure_probability,
    )
    == 14
  )
  assert plan.local_noise == pytest.approx((1.0 * 0.2 * plan.gamma) ** 2 / 40)


@pytest.mark.parametrize("mechanism", ["gaussian", "ddg", "skellam"])
def test_target_epsilon_is_met_with_the_plans_own_gamma(mechanism):
  bits = None if mechanism == "gaussian" else 14
  plan = make_plan(
    mechanism,
    size=3000,
    clip_norm=0.1,
    clients_per_round=10,
    target_epsilon=8.0,
    num_clients=500,
    rounds=20,
    bits=bits,
  )
  epsilon = plan.epsilons()[-1]
  assert epsilon <= 8.0 and epsilon == pytest.approx(8.0, rel=2e-3)
  if bits:
    assert plan.gamma == calibration.gamma_for_bits(
      bits,
      clients=10,
      clip_norm=0.1,
      dim=4096,
      noise_stddev=plan.noise_multiplier * 0.1,
      failure_probability=plan.failure_probability,
    )


def test_fewer_bits_need_more_noise_for_the_same_epsilon():
  def z(bits):
    return make_plan(
      "ddg",
      size=2**14,
      clip_norm=1.0,
      clients_per_round=50,
      target_epsilon=4.0,
      num_clients=50,
      rounds=1,
      bits=bits,
    ).noise_multiplier

  assert (
    z(12)
    > z(14)
    > z(18)
    > make_plan(
      "gaussian",
      size=0,
      clip_norm=1.0,
      clients_per_round=50,
      target_epsilon=4.0,
      num_clients=50,
      rounds=1,
    ).noise_multiplier
    * 0.999
  )


def test_a_target_out_of_reach_names_the_bits():
  with pytest.raises(ValueError, match="out of reach with bits=10"):
    make_plan(
      "ddg",
      size=2**16,
      clip_norm=1.0,
      clients_per_round=10,
      target_epsilon=1.0,
      num_clients=100,
      rounds=10,
      bits=10,
    )


def test_auto_bits_is_the_fewest_whose_rounding_costs_under_one_percent():
  from fedjax_compress.privacy import plan as plan_lib  # pylint: disable=import-outside-toplevel
  from fedjax_compress.privacy.rounding import rounding_norm_bound  # pylint: disable=import-outside-toplevel

  def inflation(bits):
    gamma = calibration.gamma_for_bits(
      bits, clients=10, clip_norm=0.3, dim=2**18, noise_stddev=0.3, failure_probability=1e-6
    )
    return rounding_norm_bound(gamma * 0.3, 2**18) / (gamma * 0.3)

  bits = plan_lib.auto_bits(1.0, clients=10, clip_norm=0.3, dim=2**18)
  assert inflation(bits) <= 1.01 < inflation(bits - 1)
  # Larger models need more bits; the default of the ddg and skellam aggregators is auto.
  assert plan_lib.auto_bits(1.0, clients=10, clip_norm=0.3, dim=2**21) > bits
  agg = aggregators.create_aggregator(
    "ddg", {"noise_multiplier": 1.0, "clip_norm": 0.3}, clients_per_round=10
  )
  assert agg.privacy({"w": jax.ShapeDtypeStruct((199_210,), jnp.float32)}).bits == bits
