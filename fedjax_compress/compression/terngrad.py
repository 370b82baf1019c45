"""TernGrad (Wen et al., 2017): stochastic ternary values {-1, 0, 1} * max|x|.

Each value leaves as sign(x) * b, b ~ Bernoulli(|x| / max|x|), in 2 bits, with max|x|
as one float32. Unbiased; the variance of a coordinate is |x| (max|x| - |x|).
"""

from __future__ import annotations

import jax.numpy as jnp

from fedjax_compress.compression import prng
from fedjax_compress.compression.base import FLOAT, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.bitpack import bitpack
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.flat import flat, unflat


@named
def ternary_codes() -> Stage:
  """Codes 0, 1, 2 for -1, 0, +1 (uint8) and max|x| as side. Follow with `bitpack(2)`."""

  def encode(x, key, shared_key):
    x = flat(x)
    scale = jnp.max(jnp.abs(x))
    keep = prng.uniform(key, x.shape) * scale < jnp.abs(x)
    return Encoded((1 + jnp.sign(x) * keep).astype(jnp.uint8), scale)

  def decode(enc, spec, shared_key):
    t = enc.values.astype(jnp.float32) - 1.0
    return unflat(enc.side * t, spec)

  return stateless(encode, decode, takes=FLOAT, emits=codes_kind(2))


@named
def terngrad() -> Stage:
  """Stochastic ternary quantization: 2 bits per value plus one float32."""
  return chain(ternary_codes(), bitpack(2))
