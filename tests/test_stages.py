"""Numerical claims of the stages, each with a tolerance derived from the math."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from fedjax_compress import aggregators as agg
from fedjax_compress.aggregators import rotation

KEY = jax.random.key(0)


def _round_trip(stage, x, key=KEY, shared=KEY):
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)

  @jax.jit
  def run(x, key, shared):
    enc = stage.encode(state, x, key, shared)
    return enc, stage.decode(state, enc, spec, shared)
  return run(x, key, shared)


def _step(x, bits):
  return (float(x.max()) - float(x.min())) / (2**bits - 1)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_stochastic_quantization_is_unbiased_and_within_one_step(bits):
  x = jnp.asarray(np.random.default_rng(0).normal(size=500), jnp.float32)
  stage = agg.uniform_quantize(bits)
  trials = 4000
  keys = jax.random.split(KEY, trials)
  decoded = jax.jit(jax.vmap(lambda k: _round_trip(stage, x, key=k)[1]))(keys)
  step = _step(x, bits)
  assert float(jnp.max(jnp.abs(decoded - x))) <= step * (1 + 1e-5)
  # Each decode is x plus a zero-mean error of variance <= step^2 / 4, so the mean of
  # `trials` decodes errs by at most 6 standard errors (all 500 coordinates, p < 1e-6).
  bound = 6 * (step / 2) / math.sqrt(trials)
  assert float(jnp.max(jnp.abs(decoded.mean(0) - x))) <= bound


@pytest.mark.parametrize("bits", [1, 3, 8, 16])
def test_deterministic_rounding_errs_by_at_most_half_a_step(bits):
  x = jnp.asarray(np.random.default_rng(1).lognormal(size=(30, 7)), jnp.float32)
  _, decoded = _round_trip(agg.uniform_quantize(bits, stochastic=False), x)
  assert decoded.shape == x.shape
  tolerance = 1e-6 * float(jnp.max(jnp.abs(x)))  # float32 arithmetic of lo + code * step
  assert float(jnp.max(jnp.abs(decoded - x))) <= _step(x, bits) / 2 + tolerance


def test_constant_tensor_quantizes_exactly():
  x = jnp.full((17,), 3.25, jnp.float32)
  _, decoded = _round_trip(agg.uniform_quantize(4), x)
  np.testing.assert_array_equal(decoded, x)


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("word_bits", [32, 28, 5])
def test_bitpack_round_trips_exactly_at_every_width(bits, word_bits):
  for n in (1, 37, 1000):
    codes = jnp.asarray(np.random.default_rng(bits * n).integers(0, 2**bits, n),
                        jnp.uint8 if bits <= 8 else jnp.uint16)
    enc, decoded = _round_trip(agg.bitpack(bits, word_bits=word_bits), codes)
    np.testing.assert_array_equal(decoded, codes)
    assert enc.values.dtype == jnp.uint32
    assert enc.values.shape == (math.ceil(bits * n / word_bits),)


def test_quantizer_rejects_bad_widths():
  for bits in (0, 17, 2.5):
    with pytest.raises(ValueError, match="1..16"):
      agg.uniform_quantize(bits)


def test_fwht_matches_the_hadamard_matrix():
  x = np.random.default_rng(2).normal(size=16).astype(np.float32)
  np.testing.assert_allclose(rotation.fwht(jnp.asarray(x)), scipy.linalg.hadamard(16) @ x,
                             rtol=1e-5, atol=1e-5)


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
  np.testing.assert_array_equal(np.asarray(jax.jit(rotation.fwht)(jnp.asarray(x))),
                                _butterflies_widest_first(x))


@pytest.mark.parametrize("n", [1, 1000, 4096])
def test_hadamard_rotation_is_orthogonal_with_an_exact_inverse(n):
  x = jnp.asarray(np.random.default_rng(n).normal(size=n), jnp.float32)
  enc, decoded = _round_trip(agg.hadamard(), x)
  assert enc.values.shape == (rotation.padded_size(n),)
  np.testing.assert_allclose(jnp.linalg.norm(enc.values), jnp.linalg.norm(x), rtol=1e-5)
  np.testing.assert_allclose(decoded, x, atol=1e-5)
  # A different shared key is a different rotation.
  other, _ = _round_trip(agg.hadamard(), x, shared=jax.random.key(9))
  assert n == 1 or not np.allclose(enc.values, other.values)


def test_chain_composes_and_counts_every_array_sent():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(50, 20)), jnp.float32)
  stage = agg.chain(agg.hadamard(), agg.uniform_quantize(3))
  enc, decoded = _round_trip(stage, x)
  assert decoded.shape == x.shape
  words = math.ceil(3 * 1024 / 32)
  assert agg.payload_bits(enc) == words * 32 + 2 * 32  # packed codes + min and max
  assert float(jnp.linalg.norm(decoded - x) / jnp.linalg.norm(x)) < 0.5


def test_parse_stages_builds_chains_and_names_the_valid_stages():
  stage = agg.parse_stages("hadamard, uniform_quantize(bits=2, stochastic=False)")
  assert len(stage.parts) == 3  # hadamard, quantize_codes, bitpack
  with pytest.raises(ValueError, match="valid names"):
    agg.parse_stages("hadamard,nope")
  with pytest.raises(ValueError, match="literals"):
    agg.parse_stages("uniform_quantize(bits=x)")


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
def test_aligned_packing_lays_bits_out_as_one_stream(bits):
  """The shift-and-add path (bits divides 32) puts code i at stream bits [i*bits, (i+1)*bits)."""
  codes = np.random.default_rng(bits).integers(0, 2**bits, 100)
  enc, _ = _round_trip(agg.bitpack(bits), jnp.asarray(codes, jnp.uint16))
  stream = "".join(format(int(c), f"0{bits}b")[::-1] for c in codes)
  stream += "0" * (-len(stream) % 32)
  expected = [int(stream[i:i + 32][::-1], 2) for i in range(0, len(stream), 32)]
  np.testing.assert_array_equal(np.asarray(enc.values), np.asarray(expected, np.uint32))


@pytest.mark.parametrize("n,block", [(1000, 256), (4096, 4096), (70_000, 2**14)])
def test_blockwise_rotation_is_orthogonal_and_pads_to_a_block_multiple(n, block):
  x = jnp.asarray(np.random.default_rng(n).normal(size=n), jnp.float32)
  enc, decoded = _round_trip(agg.hadamard(block_size=block), x)
  assert enc.values.shape == (-(-n // block) * block,)
  np.testing.assert_allclose(jnp.linalg.norm(enc.values), jnp.linalg.norm(x), rtol=1e-5)
  np.testing.assert_allclose(decoded, x, atol=1e-5)
  with pytest.raises(ValueError, match="power of two"):
    agg.hadamard(block_size=100)
