"""Scaled sign (signSGD with a magnitude): one bit per value, its sign, and mean|x|.

The biased scale of DRIVE without its rotation: x is sent as mean|x| * sign(x), the
signs packed at one bit each plus one float32.
"""

from __future__ import annotations

import jax.numpy as jnp

from fedjax_compress.compression.base import FLOAT, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.bitpack import bitpack
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.flat import flat, unflat


@named
def scaled_sign() -> Stage:
  """Signs packed at one bit each, plus the mean magnitude (float32)."""

  def encode(x, key, shared_key):
    x = flat(x)
    return Encoded((x >= 0).astype(jnp.uint8), jnp.mean(jnp.abs(x)))

  def decode(enc, spec, shared_key):
    signs = 2.0 * enc.values.astype(jnp.float32) - 1.0
    return unflat(enc.side * signs, spec)

  return chain(
    stateless(encode, decode, takes=FLOAT, emits=codes_kind(1), name="signs"), bitpack(1)
  )
