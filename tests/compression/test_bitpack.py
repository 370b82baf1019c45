"""bitpack.py: codes packed at their width, exactly."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import compression
from tests.compression.stage_helpers import round_trip


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("word_bits", [32, 28, 5])
def test_bitpack_round_trips_exactly_at_every_width(bits, word_bits):
  for n in (1, 37, 1000):
    codes = jnp.asarray(
      np.random.default_rng(bits * n).integers(0, 2**bits, n),
      jnp.uint8 if bits <= 8 else jnp.uint16,
    )
    enc, decoded = round_trip(compression.bitpack(bits, word_bits=word_bits), codes)
    np.testing.assert_array_equal(decoded, codes)
    assert enc.values.dtype == jnp.uint32
    assert enc.values.shape == (math.ceil(bits * n / word_bits),)


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
def test_aligned_packing_lays_bits_out_as_one_stream(bits):
  """The shift-and-add path (bits divides 32) puts code i at stream bits [i*bits, (i+1)*bits)."""
  codes = np.random.default_rng(bits).integers(0, 2**bits, 100)
  enc, _ = round_trip(compression.bitpack(bits), jnp.asarray(codes, jnp.uint16))
  stream = "".join(format(int(c), f"0{bits}b")[::-1] for c in codes)
  stream += "0" * (-len(stream) % 32)
  expected = [int(stream[i : i + 32][::-1], 2) for i in range(0, len(stream), 32)]
  np.testing.assert_array_equal(np.asarray(enc.values), np.asarray(expected, np.uint32))
