"""Uniform quantization over a tensor's [min, max] range: codes, and codes packed.

`quantize_codes` maps values to integer codes on the grid spanning [min(x), max(x)];
`uniform_quantize` is those codes packed to their width by `bitpack`.
"""

from __future__ import annotations

import jax.numpy as jnp

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression import prng
from fedjax_compress.compression.base import FLOAT, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.bitpack import bitpack, check_bits, code_dtype
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.flat import flat, unflat


@named
def quantize_codes(bits: int, *, stochastic: bool = True) -> Stage:
  """Maps x to integer codes in [0, 2^bits - 1] on the grid spanning [min(x), max(x)].

  Side information: min and max (two float32). Stochastic rounding (floor(t + u),
  u ~ U[0, 1)) is unbiased; deterministic rounding errs by at most half a step.
  Codes leave as uint8 / uint16: follow with `bitpack` to send them at their width.
  """
  bits = check_bits("quantize_codes", bits)
  stochastic = check.boolean("quantize_codes", "stochastic", stochastic)
  levels = 2**bits - 1

  def encode(x, key, shared_key):
    codes, lo, hi = grid_codes(flat(x), key, levels, stochastic)
    return Encoded(codes.astype(code_dtype(bits)), (lo, hi))

  def decode(enc, spec, shared_key):
    lo, hi = enc.side
    return unflat(grid_values(enc.values, lo, hi, levels), spec)

  return stateless(encode, decode, takes=FLOAT, emits=codes_kind(bits))


def grid_step(lo, hi, levels):
  """The step of a grid of `levels` steps spanning [lo, hi] (1 for a constant tensor)."""
  # A constant tensor has hi == lo: any positive step decodes it exactly.
  return jnp.where(hi > lo, (hi - lo) / levels, 1.0)


def grid_codes(x, key, levels, stochastic: bool):
  """x's points on the grid of `levels` steps over [min(x), max(x)], rounded
  stochastically (with `key`) or to nearest: (codes as float32, lo, hi)."""
  lo, hi = jnp.min(x), jnp.max(x)
  t = (x - lo) / grid_step(lo, hi, levels)
  t = jnp.floor(t + prng.uniform(key, t.shape)) if stochastic else jnp.round(t)
  return jnp.clip(t, 0, levels), lo, hi


def grid_values(codes, lo, hi, levels):
  """The values that grid `codes` stand for."""
  return lo + codes.astype(jnp.float32) * grid_step(lo, hi, levels)


@named
def uniform_quantize(
  bits: int = 8, *, stochastic: bool = True, pack: bool = True, word_bits: int = 32
) -> Stage:
  """Quantizes to `bits` bits over [min, max]; packed to its width unless `pack=False`."""
  owner = "uniform_quantize"
  bits, pack = check_bits(owner, bits), check.boolean(owner, "pack", pack)
  stochastic = check.boolean(owner, "stochastic", stochastic)
  word_bits = check.integer(owner, "word_bits", word_bits, 1, 32)
  codes = quantize_codes(bits, stochastic=stochastic)
  return chain(codes, bitpack(bits, word_bits=word_bits)) if pack else codes
