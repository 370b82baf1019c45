"""`prng.uniform` draws exactly `jax.random.uniform`'s values."""

import jax
import numpy as np
import pytest

from fedjax_compress import compression
from fedjax_compress.compression import prng


def _bits(x):
  return np.asarray(x).view(np.uint32)


@pytest.mark.parametrize("shape", [(), (1,), (3, 5), (1000, 37), (2, 3, 4, 5)])
def test_uniform_equals_jax_random_uniform(shape):
  for seed in range(3):
    key = jax.random.fold_in(jax.random.key(seed), 11)
    ours = jax.jit(prng.uniform, static_argnums=1)(key, shape)
    np.testing.assert_array_equal(_bits(ours), _bits(jax.random.uniform(key, shape)))
    assert ours.dtype == np.float32 and ours.shape == shape


def test_bits_equal_jax_random_bits():
  key = jax.random.key(9)
  for shape in [(), (7,), (300, 11)]:
    np.testing.assert_array_equal(
      jax.jit(prng.bits, static_argnums=1)(key, shape), jax.random.bits(key, shape)
    )


def test_uniform_equals_jax_random_uniform_under_vmap():
  keys = jax.random.split(jax.random.key(1), 4)
  ours = jax.vmap(lambda k: prng.uniform(k, (6, 7)))(keys)
  theirs = jax.vmap(lambda k: jax.random.uniform(k, (6, 7)))(keys)
  np.testing.assert_array_equal(_bits(ours), _bits(theirs))


def test_uniform_on_a_large_array_is_in_range_and_equal():
  key = jax.random.key(2)
  ours = jax.jit(prng.uniform, static_argnums=1)(key, (1_000_003,))
  np.testing.assert_array_equal(_bits(ours), _bits(jax.random.uniform(key, (1_000_003,))))
  assert 0.0 <= float(ours.min()) and float(ours.max()) < 1.0


@pytest.mark.parametrize("shape", [(), (1,), (3, 5), (2**21,)])
def test_rademacher_equals_jax_random_rademacher(shape):
  key = jax.random.key(8)
  ours = jax.jit(prng.rademacher, static_argnums=1)(key, shape)
  np.testing.assert_array_equal(_bits(ours), _bits(jax.random.rademacher(key, shape, np.float32)))
  keys = jax.random.split(key, 3)
  np.testing.assert_array_equal(
    _bits(jax.vmap(lambda k: prng.rademacher(k, (9,)))(keys)),
    _bits(jax.vmap(lambda k: jax.random.rademacher(k, (9,), np.float32))(keys)),
  )


def test_uniform_falls_back_where_it_cannot_reproduce_jax():
  rbg = jax.random.key(3, impl="rbg")
  np.testing.assert_array_equal(
    _bits(prng.uniform(rbg, (5, 4))), _bits(jax.random.uniform(rbg, (5, 4)))
  )
  key = jax.random.key(3)
  with jax.threefry_partitionable(False):
    np.testing.assert_array_equal(
      _bits(prng.uniform(key, (5, 4))), _bits(jax.random.uniform(key, (5, 4)))
    )


def test_stochastic_quantization_draws_jax_random_uniform():
  # The stage's codes are those of the formula with `jax.random.uniform`: runs recorded
  # before `prng` existed reproduce.
  x = jax.random.normal(jax.random.key(4), (40_000,))
  key = jax.random.key(5)
  enc = compression.quantize_codes(8).encode((), x, key, key)
  lo, hi = x.min(), x.max()
  t = (x - lo) / ((hi - lo) / 255)
  expected = np.clip(np.floor(t + jax.random.uniform(key, t.shape)), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(np.asarray(enc.values), expected)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the unrolled hash is for XLA:CPU")
def test_uniform_on_cpu_runs_the_unrolled_hash():
  key = jax.random.key(6)
  ours = str(jax.make_jaxpr(lambda k: prng.uniform(k, (10,)))(key))
  theirs = str(jax.make_jaxpr(lambda k: jax.random.uniform(k, (10,)))(key))
  assert "random_bits" in theirs and "random_bits" not in ours
