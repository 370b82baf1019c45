"""top_k.py: the largest magnitudes and their packed indices."""

import math

import numpy as np

from fedjax_compress import aggregators as agg
from fedjax_compress import compression
from tests.compression.stage_helpers import KEY, coder, gaussian


WORDS = lambda bits, n: math.ceil(bits * n / 32) * 32


def test_top_k_keeps_the_largest_values_with_indices_beyond_16_bits():
  d, k = 70_000, 40  # indices need 17 bits: packed as a 16-bit and a 1-bit array
  x = gaussian(d, seed=5)
  encode, decode = coder(compression.top_k(k), x)
  enc = encode(x, KEY, KEY)
  assert agg.payload_bits(enc) == 32 * k + WORDS(16, k) + WORDS(1, k)
  keep = np.argsort(-np.abs(np.asarray(x)))[:k]
  expected = np.zeros(d, np.float32)
  expected[keep] = np.asarray(x)[keep]
  np.testing.assert_array_equal(decode(enc, KEY), expected)
