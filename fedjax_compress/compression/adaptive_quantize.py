"""Uniform quantization whose bit width a controller picks round by round.

`adaptive_quantize(target_vnmse)` quantizes like `uniform_quantize` (2^b - 1 levels
over [min(x), max(x)], stochastic rounding by default) at a bit width b held in the
stage's state. Every client reports the distortion of its own message,
||x_hat - x||^2 / ||x||^2 (it can decode what it sends), and after each round `update`
sets the width of the next from the clients' mean distortion D:

  D > target                                           -> b + 1 (the target was missed)
  margin * D * ((2^b - 1) / (2^(b-1) - 1))^2 <= target -> b - 1 (b - 1 would meet it)
  otherwise                                            -> b

clipped to [min_bits, max_bits]. The distortion of uniform quantization scales with the
squared step, (hi - lo)^2 / (2^b - 1)^2, so the factor predicts the distortion at b - 1
(it is at least 4; a 1-bit quantizer never drops). Both conditions cannot hold at once,
and a width that meets the target is left only when a narrower one is predicted to meet
it too, so the width settles at the smallest one that meets the target. The prediction
is a model: the true growth can exceed the factor (stochastic rounding of a Gaussian
grows it ~12x, not 9x, from 2 to 1 bits; ~4.7x, not 4.3x, from 5 to 4), and a target in
that gap would make the width alternate. `drop_margin` (default 1.5) asks for that much
slack before dropping a bit, which covers those gaps.

The codes travel at exactly b bits each in a `Stream` whose buffer holds `max_bits` per
code; b is a traced value, so one compiled program serves every width. The message
carries b itself (a uint8 in the side information): the server decodes each message
from what it holds, even if a client encoded with a width other than the server's
current one. The controller's state, the width, must still reach every client before
each round: an aggregator counts a stage state that `update` changes as downlink bits
(`encoded_sum` adds the state's 32 bits to `downlink_aux_bits`).

Per client: b * n bits of codes, 2 * 32 (lo, hi) + 8 (b) + 32 (distortion) of side
information.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.base import FLOAT, STREAM, Encoded, Stage, named
from fedjax_compress.compression.bitpack import MAX_CODE_BITS
from fedjax_compress.compression.bits import Stream
from fedjax_compress.compression.flat import flat, nonzero, num_values, unflat
from fedjax_compress.compression.uniform_quantize import grid_codes, grid_values

MAX_BITS = MAX_CODE_BITS


class AdaptiveSide(NamedTuple):
  """Side information of one client's message; every leaf counts at its dtype's width."""

  stream: Stream  # the codes, b bits each
  lo: jax.Array  # float32: min(x)
  hi: jax.Array  # float32: max(x)
  bits: jax.Array  # uint8: b, so the message decodes on its own
  distortion: jax.Array  # float32: ||x_hat - x||^2 / ||x||^2, for the controller


def capacity_words(n: int, max_bits: int) -> int:
  """Words of the static buffer that holds n codes of up to `max_bits` bits."""
  return math.ceil(max_bits * n / 32)


def _positions(n: int, bits: jax.Array):
  """Word index and bit shift of each code's first bit (code i starts at bit i * bits).

  Split as i = 32 q + r: the offset is 32 q b + r b, so the word is q b + (r b) // 32,
  which stays in int32 range for any n whose stream fits the buffer.
  """
  i = jnp.arange(n, dtype=jnp.int32)
  q, r = i // 32, i % 32
  return q * bits + (r * bits) // 32, ((r * bits) % 32).astype(jnp.uint32)


def pack_codes(codes: jax.Array, bits: jax.Array, num_words: int) -> Stream:
  """Packs codes (< 2^bits) at `bits` bits each; `bits` may be traced.

  Bit j of the stream is bit j % 32 of word j // 32. A code may straddle two words;
  the parts of different codes never share a bit, so adding them places them exactly.
  """
  codes = codes.reshape(-1).astype(jnp.uint32)
  bits = jnp.asarray(bits, jnp.int32)
  word, shift = _positions(codes.size, bits)
  low = codes << shift  # the bits beyond the word fall off
  # What spills into the next word; (32 - shift) & 31 keeps the shift in range, and
  # shift == 0 never spills.
  high = jnp.where(shift > 0, codes >> ((32 - shift) & 31), 0).astype(jnp.uint32)
  words = jnp.zeros((num_words,), jnp.uint32)
  words = words.at[word].add(low, mode="drop").at[word + 1].add(high, mode="drop")
  return Stream(words, bits * codes.size)


def unpack_codes(words: jax.Array, bits: jax.Array, n: int) -> jax.Array:
  """The n `bits`-bit codes of `pack_codes`'s words (uint32)."""
  bits = jnp.asarray(bits, jnp.int32)
  word, shift = _positions(n, bits)
  words = jnp.concatenate([words, jnp.zeros((1,), jnp.uint32)])  # the last code's "next word"
  high = jnp.where(shift > 0, words[word + 1] << ((32 - shift) & 31), 0).astype(jnp.uint32)
  mask = (jnp.uint32(1) << bits.astype(jnp.uint32)) - jnp.uint32(1)
  return ((words[word] >> shift) | high) & mask


def _levels(bits):
  return (2.0 ** jnp.asarray(bits, jnp.float32)) - 1.0


def drop_factor(bits: jax.Array) -> jax.Array:
  """((2^b - 1) / (2^(b-1) - 1))^2: how much the distortion grows from b to b - 1 bits.

  Infinite for b = 1 (no narrower width exists).
  """
  levels, narrower = _levels(bits), _levels(jnp.asarray(bits, jnp.float32) - 1)
  return jnp.where(narrower > 0, (levels / nonzero(narrower)) ** 2, jnp.inf)


def next_bits(
  bits: jax.Array,
  distortion: jax.Array,
  target_vnmse: float,
  min_bits: int,
  max_bits: int,
  drop_margin: float = 1.0,
) -> jax.Array:
  """The control rule: the width after a round at `bits` with mean `distortion` (int32)."""
  bits = jnp.asarray(bits, jnp.int32)
  predicted = drop_margin * distortion * drop_factor(bits)
  new = jnp.where(
    distortion > target_vnmse, bits + 1, jnp.where(predicted <= target_vnmse, bits - 1, bits)
  )
  return jnp.clip(new, min_bits, max_bits).astype(jnp.int32)


@named
def adaptive_quantize(
  target_vnmse: float,
  *,
  min_bits: int = 1,
  max_bits: int = 8,
  initial_bits: int = 4,
  stochastic: bool = True,
  drop_margin: float = 1.5,
) -> Stage:
  """Uniform quantization at a width in [min_bits, max_bits] steered to `target_vnmse`.

  Args:
    target_vnmse: the distortion ||x_hat - x||^2 / ||x||^2 to stay under, averaged over
      a round's clients.
    min_bits, max_bits: the range of widths (1 <= min_bits <= max_bits <= 16).
    initial_bits: the width of the first round.
    stochastic: stochastic (unbiased) rounding, else round to nearest.
    drop_margin: drop a bit only if the predicted distortion times this meets the
      target (>= 1; 1 trusts the prediction exactly).

  State: the width, an int32 scalar. Side information: an `AdaptiveSide`. `values` is an
  empty array: the codes travel in the side's `Stream`, so nothing can follow this stage
  in a chain.
  """
  owner = "adaptive_quantize"
  target_vnmse = check.real(owner, "target_vnmse", target_vnmse, 0.0, lo_open=True)
  min_bits = check.integer(owner, "min_bits", min_bits, 1, MAX_BITS)
  max_bits = check.integer(owner, "max_bits", max_bits, min_bits, MAX_BITS)
  initial_bits = check.integer(owner, "initial_bits", initial_bits, min_bits, max_bits)
  stochastic = check.boolean(owner, "stochastic", stochastic)
  drop_margin = check.real(owner, "drop_margin", drop_margin, 1.0)

  def init(spec):
    return jnp.asarray(initial_bits, jnp.int32)

  def encode(state, x, key, shared_key):
    x = flat(x)
    # The buffer holds max_bits per code: a width outside the range must not overflow it.
    bits = jnp.clip(jnp.asarray(state, jnp.int32), min_bits, max_bits)
    codes, lo, hi = grid_codes(x, key, _levels(bits), stochastic)
    codes = codes.astype(jnp.uint32)
    x_hat = grid_values(codes, lo, hi, _levels(bits))
    norm = jnp.sum(x * x)
    distortion = jnp.where(norm > 0, jnp.sum((x_hat - x) ** 2) / nonzero(norm), 0.0)
    stream = pack_codes(codes, bits, capacity_words(x.size, max_bits))
    side = AdaptiveSide(stream, lo, hi, bits.astype(jnp.uint8), distortion.astype(jnp.float32))
    return Encoded(jnp.zeros((0,), jnp.uint32), side)

  def decode(state, enc, spec, shared_key):
    side = enc.side
    n = num_values(spec)
    bits = side.bits.astype(jnp.int32)  # the message's own width, not the server's
    codes = unpack_codes(side.stream.words, bits, n)
    return unflat(grid_values(codes, side.lo, side.hi, _levels(bits)), spec)

  def update(state, sides):
    return next_bits(
      state, jnp.mean(sides.distortion), target_vnmse, min_bits, max_bits, drop_margin
    )

  return Stage(
    init, encode, decode, commutes_with_sum=False, update=update, takes=FLOAT, emits=STREAM
  )
