"""dithered.py: subtractive dither, an error uniform and independent of the input."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import compression
from tests.compression.stage_helpers import KEY, coder


def test_dithered_error_is_uniform_and_independent_of_the_input():
  x = jnp.linspace(-1.0, 1.0, 4096)
  stage = compression.dithered(4)
  encode, decode = coder(stage, x)
  err = np.asarray(decode(encode(x, KEY, KEY), KEY) - x)
  step = 2.0 / 15
  assert np.abs(err).max() <= step / 2 * (1 + 1e-5)
  # Uniform on (-step/2, step/2]: mean 0, variance step^2/12, for every part of the range.
  for part in np.split(err, 4):
    assert abs(part.mean()) < 4 * step / math.sqrt(12 * part.size)
    assert part.var() == pytest.approx(step**2 / 12, rel=0.15)
