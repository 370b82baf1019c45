"""lloyd_max.py: the Gaussian Lloyd-Max levels (Max, 1960) and the nearest-level search."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress.compression.lloyd_max import (
  gaussian_distortion,
  gaussian_levels,
  nearest_level,
)
from tests.compression.stage_helpers import gaussian


def test_gaussian_lloyd_max_levels_match_the_tables():
  np.testing.assert_allclose(
    gaussian_levels(1), [-math.sqrt(2 / math.pi), math.sqrt(2 / math.pi)], rtol=1e-9
  )
  np.testing.assert_allclose(gaussian_levels(2), [-1.5104, -0.4528, 0.4528, 1.5104], atol=1e-4)
  for bits, distortion in [(1, 0.3634), (2, 0.1175), (3, 0.03455), (4, 0.009497)]:
    assert gaussian_distortion(bits) == pytest.approx(distortion, rel=1e-3)


@pytest.mark.parametrize("bits", [1, 2, 5, 6])  # compared with every midpoint; searched
def test_nearest_level_is_the_closest_level(bits):
  levels = jnp.asarray(gaussian_levels(bits), jnp.float32)
  x = jnp.concatenate([gaussian(5000, seed=bits) * 1.5, (levels[1:] + levels[:-1]) / 2 + 1e-6])
  found = np.asarray(jax.jit(nearest_level)(x, levels))
  distance = np.abs(np.asarray(x)[:, None] - np.asarray(levels)[None])
  np.testing.assert_array_equal(distance[np.arange(x.size), found], distance.min(axis=1))
