"""hadamard.py: the fast Walsh-Hadamard transform and the randomized rotation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from fedjax_compress import compression
from fedjax_compress.compression.hadamard import fwht, padded_size
from tests.compression.stage_helpers import round_trip


def test_fwht_matches_the_hadamard_matrix():
  x = np.random.default_rng(2).normal(size=16).astype(np.float32)
  np.testing.assert_allclose(
    fwht(jnp.asarray(x)), scipy.linalg.hadamard(16) @ x, rtol=1e-5, atol=1e-5
  )


def _butterflies_widest_first(x):
  """The transform's rounding, fixed: halves a, b -> [H(a + b), H(a - b)] in float32."""
  if x.size == 1:
    return x
  a, b = np.split(x, 2)
  return np.concatenate([_butterflies_widest_first(a + b), _butterflies_widest_first(a - b)])


@pytest.mark.parametrize("n", [1, 2, 1024])
def test_fwht_rounds_as_butterflies_widest_first(n):
  # The order of the additions sets the rounding: recorded rotated runs reproduce.
  x = np.random.default_rng(n).normal(size=n).astype(np.float32)
  np.testing.assert_array_equal(
    np.asarray(jax.jit(fwht)(jnp.asarray(x))), _butterflies_widest_first(x)
  )


@pytest.mark.parametrize("n", [1, 1000, 4096])
def test_hadamard_rotation_is_orthogonal_with_an_exact_inverse(n):
  x = jnp.asarray(np.random.default_rng(n).normal(size=n), jnp.float32)
  enc, decoded = round_trip(compression.hadamard(), x)
  assert enc.values.shape == (padded_size(n),)
  np.testing.assert_allclose(jnp.linalg.norm(enc.values), jnp.linalg.norm(x), rtol=1e-5)
  np.testing.assert_allclose(decoded, x, atol=1e-5)
  # A different shared key is a different rotation.
  other, _ = round_trip(compression.hadamard(), x, shared=jax.random.key(9))
  assert n == 1 or not np.allclose(enc.values, other.values)


@pytest.mark.parametrize("n,block", [(1000, 256), (4096, 4096), (70_000, 2**14)])
def test_blockwise_rotation_is_orthogonal_and_pads_to_a_block_multiple(n, block):
  x = jnp.asarray(np.random.default_rng(n).normal(size=n), jnp.float32)
  enc, decoded = round_trip(compression.hadamard(block_size=block), x)
  assert enc.values.shape == (-(-n // block) * block,)
  np.testing.assert_allclose(jnp.linalg.norm(enc.values), jnp.linalg.norm(x), rtol=1e-5)
  np.testing.assert_allclose(decoded, x, atol=1e-5)
  with pytest.raises(ValueError, match="power of two"):
    compression.hadamard(block_size=100)
