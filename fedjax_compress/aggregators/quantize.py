"""Uniform quantization over a tensor's [min, max] range, and bit packing."""

from __future__ import annotations

import math

import jax.numpy as jnp

from fedjax_compress.aggregators import arguments as check
from fedjax_compress.aggregators import prng
from fedjax_compress.aggregators.stages import (FLOAT, WORDS, Encoded, Stage, chain, codes_kind,
                                                named, stateless)

MAX_CODE_BITS = 16  # codes travel as uint8 / uint16


def check_bits(owner: str, bits, max_bits: int = MAX_CODE_BITS) -> int:
  """`bits` as a code width in 1..max_bits (an int); else a ValueError naming `owner`."""
  return check.integer(owner, "bits", bits, 1, max_bits)


def code_dtype(bits: int):
  """The unsigned dtype that holds `bits`-bit codes: uint8 up to 8 bits, else uint16."""
  return jnp.uint8 if bits <= 8 else jnp.uint16


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
    codes, lo, hi = grid_codes(x.reshape(-1).astype(jnp.float32), key, levels, stochastic)
    return Encoded(codes.astype(code_dtype(bits)), (lo, hi))

  def decode(enc, spec, shared_key):
    lo, hi = enc.side
    return grid_values(enc.values, lo, hi, levels).reshape(spec.shape).astype(spec.dtype)

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
def bitpack(bits: int, *, word_bits: int = 32) -> Stage:
  """Packs `bits`-bit codes densely, `word_bits` payload bits per uint32 word.

  n codes take ceil(bits * n / word_bits) words; a code may straddle two words.
  `word_bits=28` is TFF's packing (it keeps packed sums exact in float32).
  """
  bits = check_bits("bitpack", bits)
  word_bits = check.integer("bitpack", "word_bits", word_bits, 1, 32)

  aligned = word_bits % bits == 0  # no code straddles two words: shift and add

  def encode(codes, key, shared_key):
    codes = codes.reshape(-1).astype(jnp.uint32)
    if aligned:
      per_word = word_bits // bits
      codes = jnp.pad(codes, (0, -codes.size % per_word)).reshape(-1, per_word)
      shifts = bits * jnp.arange(per_word, dtype=jnp.uint32)
      return Encoded(jnp.sum(codes << shifts, axis=1, dtype=jnp.uint32))
    stream = ((codes[:, None] >> jnp.arange(bits, dtype=jnp.uint32)) & 1).reshape(-1)
    stream = jnp.pad(stream, (0, -stream.size % word_bits)).reshape(-1, word_bits)
    return Encoded(jnp.sum(stream << jnp.arange(word_bits, dtype=jnp.uint32), axis=1,
                           dtype=jnp.uint32))

  def decode(enc, spec, shared_key):
    n = math.prod(spec.shape)
    if aligned:
      shifts = bits * jnp.arange(word_bits // bits, dtype=jnp.uint32)
      codes = ((enc.values[:, None] >> shifts) & (2**bits - 1)).reshape(-1)[:n]
    else:
      stream = (enc.values[:, None] >> jnp.arange(word_bits, dtype=jnp.uint32)) & 1
      stream = stream.reshape(-1)[:n * bits].reshape(n, bits)
      codes = jnp.sum(stream << jnp.arange(bits, dtype=jnp.uint32), axis=1, dtype=jnp.uint32)
    return codes.astype(spec.dtype).reshape(spec.shape)

  return stateless(encode, decode, takes=codes_kind(bits), emits=WORDS)


@named
def uniform_quantize(bits: int = 8, *, stochastic: bool = True, pack: bool = True,
                     word_bits: int = 32) -> Stage:
  """Quantizes to `bits` bits over [min, max]; packed to its width unless `pack=False`."""
  owner = "uniform_quantize"
  bits, pack = check_bits(owner, bits), check.boolean(owner, "pack", pack)
  stochastic = check.boolean(owner, "stochastic", stochastic)
  word_bits = check.integer(owner, "word_bits", word_bits, 1, 32)
  codes = quantize_codes(bits, stochastic=stochastic)
  return chain(codes, bitpack(bits, word_bits=word_bits)) if pack else codes
