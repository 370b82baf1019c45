"""chain.py: stages composed, every array they send counted."""

import math

import jax.numpy as jnp
import numpy as np

from fedjax_compress import aggregators as agg
from fedjax_compress import compression
from tests.compression.stage_helpers import round_trip


def test_chain_composes_and_counts_every_array_sent():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(50, 20)), jnp.float32)
  stage = compression.chain(compression.hadamard(), compression.uniform_quantize(3))
  enc, decoded = round_trip(stage, x)
  assert decoded.shape == x.shape
  words = math.ceil(3 * 1024 / 32)
  assert agg.payload_bits(enc) == words * 32 + 2 * 32  # packed codes + min and max
  assert float(jnp.linalg.norm(decoded - x) / jnp.linalg.norm(x)) < 0.5
