"""Property-based tests of the stages: random shapes, dtypes, widths and keys."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedjax_compress import aggregators as agg
from fedjax_compress import compression

# Each example compiles anew; keep the counts small and the shapes tiny.
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)
shapes = st.lists(st.integers(1, 9), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16])
bit_widths = st.integers(1, 16)
seeds = st.integers(0, 2**31 - 1)


def _encode_decode(stage, x, seed):
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)
  key, shared = jax.random.split(jax.random.key(seed))
  enc = stage.encode(state, x, key, shared)
  return enc, stage.decode(state, enc, spec, shared)


def _data(shape, dtype, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * 3, dtype)


@pytest.mark.slow
@SETTINGS
@given(shape=shapes, dtype=dtypes, bits=bit_widths, seed=seeds, stochastic=st.booleans())
def test_quantization_keeps_spec_bounds_error_and_counts_its_payload(
  shape, dtype, bits, seed, stochastic
):
  x = _data(shape, dtype, seed)
  enc, y = _encode_decode(compression.uniform_quantize(bits, stochastic=stochastic), x, seed)
  assert y.shape == x.shape and y.dtype == x.dtype
  n = max(math.prod(shape), 1)
  assert agg.payload_bits(enc) == math.ceil(bits * n / 32) * 32 + 2 * 32
  x32, y32 = np.asarray(x, np.float32), np.asarray(y, np.float32)
  step = (x32.max() - x32.min()) / (2**bits - 1)
  # One step (half for rounding), plus the output dtype's own rounding of the result.
  resolution = float(jnp.finfo(dtype).eps) * np.abs(x32).max()
  bound = (step if stochastic else step / 2) * (1 + 1e-5) + resolution
  assert np.abs(y32 - x32).max() <= bound


@pytest.mark.slow
@SETTINGS
@given(n=st.integers(1, 300), bits=bit_widths, word_bits=st.integers(1, 32), seed=seeds)
def test_bitpack_round_trips_any_width_and_word(n, bits, word_bits, seed):
  codes = jnp.asarray(np.random.default_rng(seed).integers(0, 2**bits, n), jnp.uint16)
  enc, decoded = _encode_decode(compression.bitpack(bits, word_bits=word_bits), codes, seed)
  np.testing.assert_array_equal(decoded, codes)
  assert agg.payload_bits(enc) == 32 * math.ceil(bits * n / word_bits)


@pytest.mark.slow
@SETTINGS
@given(shape=shapes, seed=seeds)
def test_rotation_preserves_norm_and_inverts(shape, seed):
  x = _data(shape, jnp.float32, seed)
  enc, y = _encode_decode(compression.hadamard(), x, seed)
  np.testing.assert_allclose(jnp.linalg.norm(enc.values), jnp.linalg.norm(x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@SETTINGS
@given(shape=shapes, bits=st.integers(1, 8), seed=seeds, clients=st.integers(1, 4))
def test_encoded_sum_bits_equal_each_clients_payload(shape, bits, seed, clients):
  updates = {
    "a": _data((clients, *shape), jnp.float32, seed),
    "b": _data((clients, 3), jnp.float32, seed + 1),
  }
  stage = compression.chain(compression.hadamard(), compression.uniform_quantize(bits))
  aggregator = agg.encoded_sum(stage, threshold=3)
  state = aggregator.init(jax.tree.map(lambda u: u[0], updates))
  total, _, m = aggregator.apply(state, updates, jnp.ones(clients), jax.random.key(seed))
  n = max(math.prod(shape), 1)
  leaf_a = (math.ceil(bits * (1 << (n - 1).bit_length()) / 32) * 32 + 64) if n > 3 else n * 32
  np.testing.assert_array_equal(m[agg.UPLINK_BITS], leaf_a + 3 * 32)
  assert total["a"].shape == shape and np.isfinite(np.asarray(total["a"])).all()
