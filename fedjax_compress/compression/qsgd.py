"""QSGD (Alistarh et al., 2017): stochastic quantization of |x| / ||bucket|| to s levels.

x is cut into buckets of `bucket_size` values. Each bucket sends its L2 norm (float32);
each value its sign (1 bit) and a level l in 0..s (ceil(log2(s + 1)) bits), rounded
stochastically so that norm * sign * l / s is unbiased. The variance of a value is at
most (norm / s)^2 / 4. Bits: ceil(d * (1 + w) / 32) * 32 + 32 * ceil(d / bucket_size),
w = ceil(log2(s + 1)).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression import prng
from fedjax_compress.compression.base import FLOAT, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.bitpack import MAX_CODE_BITS, bitpack, code_dtype
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.flat import flat, nonzero, num_values, unflat

# A code is a sign bit and the level: at most MAX_CODE_BITS bits, so 2^15 - 1 levels.
MAX_LEVELS = 2 ** (MAX_CODE_BITS - 1) - 1


def level_bits(levels: int) -> int:
  """Bits of a level code for `levels` levels: ceil(log2(levels + 1))."""
  return max(1, math.ceil(math.log2(levels + 1)))


def _buckets(x, bucket_size):
  return jnp.pad(x, (0, -x.size % bucket_size)).reshape(-1, bucket_size)


def _check(owner: str, levels, bucket_size) -> tuple[int, int]:
  return (
    check.integer(owner, "levels", levels, 1, MAX_LEVELS),
    check.integer(owner, "bucket_size", bucket_size, 1),
  )


@named
def qsgd_codes(levels: int, bucket_size: int = 512) -> Stage:
  """Codes `sign << w | level` (w = level_bits(levels)) and the bucket norms as side.

  Follow with `bitpack(1 + w)`; `qsgd(levels)` is the whole chain.
  """
  levels, bucket_size = _check("qsgd_codes", levels, bucket_size)
  w = level_bits(levels)

  def encode(x, key, shared_key):
    x = flat(x)
    b = _buckets(x, bucket_size)
    norms = jnp.linalg.norm(b, axis=1)
    t = levels * jnp.abs(b) / nonzero(norms)[:, None]
    level = jnp.minimum(jnp.floor(t + prng.uniform(key, t.shape)), levels)
    codes = (level.astype(jnp.uint32) | ((b < 0).astype(jnp.uint32) << w)).reshape(-1)
    return Encoded(codes[: x.size].astype(code_dtype(1 + w)), norms)

  def decode(enc, spec, shared_key):
    codes = _buckets(enc.values.reshape(-1).astype(jnp.int32), bucket_size)
    level = (codes & (2**w - 1)).astype(jnp.float32)
    sign = 1.0 - 2.0 * (codes >> w).astype(jnp.float32)
    x = (enc.side[:, None] / levels * sign * level).reshape(-1)
    return unflat(x[: num_values(spec)], spec)

  return stateless(encode, decode, takes=FLOAT, emits=codes_kind(1 + w))


@named
def qsgd(levels: int = 7, bucket_size: int = 512) -> Stage:
  """QSGD with `levels` levels per sign, packed at 1 + ceil(log2(levels + 1)) bits.

  `levels` in 1..32767 (codes of at most 16 bits), `bucket_size` >= 1.
  """
  levels, bucket_size = _check("qsgd", levels, bucket_size)
  return chain(qsgd_codes(levels, bucket_size), bitpack(1 + level_bits(levels)))
