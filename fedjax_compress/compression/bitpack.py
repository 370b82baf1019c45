"""Bit packing: integer codes sent at their width, densely, in uint32 words."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.base import WORDS, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.flat import num_values

MAX_CODE_BITS = 16  # codes travel as uint8 / uint16


def check_bits(owner: str, bits, max_bits: int = MAX_CODE_BITS) -> int:
  """`bits` as a code width in 1..max_bits (an int); else a ValueError naming `owner`."""
  return check.integer(owner, "bits", bits, 1, max_bits)


def code_dtype(bits: int):
  """The unsigned dtype that holds `bits`-bit codes: uint8 up to 8 bits, else uint16."""
  return jnp.uint8 if bits <= 8 else jnp.uint16


def pack(codes: jax.Array, bits: int, word_bits: int = 32) -> jax.Array:
  """Codes below 2^bits as dense uint32 words, `word_bits` payload bits per word."""
  codes = codes.reshape(-1).astype(jnp.uint32)
  if word_bits % bits == 0:  # no code straddles two words: shift and add
    per_word = word_bits // bits
    codes = jnp.pad(codes, (0, -codes.size % per_word)).reshape(-1, per_word)
    shifts = bits * jnp.arange(per_word, dtype=jnp.uint32)
    return jnp.sum(codes << shifts, axis=1, dtype=jnp.uint32)
  stream = ((codes[:, None] >> jnp.arange(bits, dtype=jnp.uint32)) & 1).reshape(-1)
  stream = jnp.pad(stream, (0, -stream.size % word_bits)).reshape(-1, word_bits)
  return jnp.sum(stream << jnp.arange(word_bits, dtype=jnp.uint32), axis=1, dtype=jnp.uint32)


def unpack(words: jax.Array, n: int, bits: int, word_bits: int = 32) -> jax.Array:
  """The first n codes of `pack`'s words, as uint32."""
  if word_bits % bits == 0:
    shifts = bits * jnp.arange(word_bits // bits, dtype=jnp.uint32)
    return ((words[:, None] >> shifts) & (2**bits - 1)).reshape(-1)[:n]
  stream = (words[:, None] >> jnp.arange(word_bits, dtype=jnp.uint32)) & 1
  stream = stream.reshape(-1)[: n * bits].reshape(n, bits)
  return jnp.sum(stream << jnp.arange(bits, dtype=jnp.uint32), axis=1, dtype=jnp.uint32)


@named
def bitpack(bits: int, *, word_bits: int = 32) -> Stage:
  """Packs `bits`-bit codes densely, `word_bits` payload bits per uint32 word (`pack`).

  n codes take ceil(bits * n / word_bits) words; a code may straddle two words.
  `word_bits=28` is TFF's packing (it keeps packed sums exact in float32).
  """
  bits = check_bits("bitpack", bits)
  word_bits = check.integer("bitpack", "word_bits", word_bits, 1, 32)

  def encode(codes, key, shared_key):
    return Encoded(pack(codes, bits, word_bits))

  def decode(enc, spec, shared_key):
    return (
      unpack(enc.values, num_values(spec), bits, word_bits).astype(spec.dtype).reshape(spec.shape)
    )

  return stateless(encode, decode, takes=codes_kind(bits), emits=WORDS)
