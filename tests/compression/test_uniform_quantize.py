"""uniform_quantize.py: stochastic and deterministic rounding on the [min, max] grid."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import compression
from tests.compression.stage_helpers import KEY, round_trip


def _step(x, bits):
  return (float(x.max()) - float(x.min())) / (2**bits - 1)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_stochastic_quantization_is_unbiased_and_within_one_step(bits):
  x = jnp.asarray(np.random.default_rng(0).normal(size=500), jnp.float32)
  stage = compression.uniform_quantize(bits)
  trials = 4000
  keys = jax.random.split(KEY, trials)
  decoded = jax.jit(jax.vmap(lambda k: round_trip(stage, x, key=k)[1]))(keys)
  step = _step(x, bits)
  assert float(jnp.max(jnp.abs(decoded - x))) <= step * (1 + 1e-5)
  # Each decode is x plus a zero-mean error of variance <= step^2 / 4, so the mean of
  # `trials` decodes errs by at most 6 standard errors (all 500 coordinates, p < 1e-6).
  bound = 6 * (step / 2) / math.sqrt(trials)
  assert float(jnp.max(jnp.abs(decoded.mean(0) - x))) <= bound


@pytest.mark.parametrize("bits", [1, 3, 8, 16])
def test_deterministic_rounding_errs_by_at_most_half_a_step(bits):
  x = jnp.asarray(np.random.default_rng(1).lognormal(size=(30, 7)), jnp.float32)
  _, decoded = round_trip(compression.uniform_quantize(bits, stochastic=False), x)
  assert decoded.shape == x.shape
  tolerance = 1e-6 * float(jnp.max(jnp.abs(x)))  # float32 arithmetic of lo + code * step
  assert float(jnp.max(jnp.abs(decoded - x))) <= _step(x, bits) / 2 + tolerance


def test_constant_tensor_quantizes_exactly():
  x = jnp.full((17,), 3.25, jnp.float32)
  _, decoded = round_trip(compression.uniform_quantize(4), x)
  np.testing.assert_array_equal(decoded, x)


def test_quantizer_rejects_bad_widths():
  for bits in (0, 17, 2.5):
    with pytest.raises(ValueError, match="1..16"):
      compression.uniform_quantize(bits)
