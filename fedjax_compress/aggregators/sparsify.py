"""Sparsification: send k of a tensor's d values.

`top_k` sends the k largest magnitudes (float32) and their indices, packed at
ceil(log2 d) bits each: it is biased. `rand_k` takes k indices drawn from the shared key,
which the server draws too, so they cost nothing; scaled by d / k it is unbiased, with
variance (d / k - 1) x_i^2 per value, and linear: the server sums before decoding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.aggregators import arguments as check
from fedjax_compress.aggregators import prng
from fedjax_compress.aggregators.quantize import bitpack
from fedjax_compress.aggregators.stages import FLOAT, Encoded, Spec, Stage, named, stateless


_SMALLEST_NORMAL_BITS = 0x00800000  # float32 2^-126


def check_kept(owner: str, k, fraction) -> tuple[int | None, float | None]:
  """(k, fraction) if exactly one is given, k an int >= 1 or fraction in (0, 1]."""
  if (k is None) == (fraction is None):
    raise ValueError(f"{owner}: give exactly one of k and fraction (got k={k!r}, "
                     f"fraction={fraction!r}).")
  if k is not None:
    return check.integer(owner, "k", k, 1), None
  return None, check.real(owner, "fraction", fraction, 0.0, 1.0, lo_open=True)


def num_kept(d: int, k: int | None, fraction: float | None, owner: str = "top_k") -> int:
  """k itself (an error if k > d, never clamped), or max(1, round(fraction * d)).

  A fraction keeps at least one value of every tensor it encodes (a fraction of a tiny
  tensor can round to none); k is a count the user chose, so a tensor smaller than k
  is an error naming the fix. Tensors are known only when encoded: this runs while
  tracing.
  """
  k, fraction = check_kept(owner, k, fraction)
  if k is None:
    return max(1, round(fraction * d))
  if k > d:
    raise ValueError(f"{owner}: k={k} is invalid for a tensor of {d} values: it must be in "
                     f"1..{d}; lower k, or encode only tensors larger than k (threshold >= k).")
  return k


def index_bits(d: int) -> int:
  """Bits of one index into d coordinates: ceil(log2 d), at least 1."""
  return max(1, math.ceil(math.log2(d)))


def _chunks(width):
  # bitpack takes up to 16 bits a code: wider indices go as a 16-bit and a rest part.
  return [(lo, min(16, width - lo)) for lo in range(0, width, 16)]


def pack_indices(idx: jax.Array, width: int) -> tuple[jax.Array, ...]:
  """Indices < 2^width as dense uint32 words, `width` bits each (one array per 16 bits)."""
  idx = idx.astype(jnp.uint32)
  return tuple(bitpack(w).encode((), (idx >> lo) & (2**w - 1), None, None).values
               for lo, w in _chunks(width))


def unpack_indices(words: tuple[jax.Array, ...], k: int, width: int) -> jax.Array:
  """Indices from their packed form, inverse of the packing in `top_k`."""
  idx = jnp.zeros((k,), jnp.uint32)
  for part, (lo, w) in zip(words, _chunks(width)):
    idx |= bitpack(w).decode((), Encoded(part), Spec((k,), jnp.uint32), None) << lo
  return idx.astype(jnp.int32)


@named
def top_k(k: int | None = None, *, fraction: float | None = None) -> Stage:
  """The k largest |x| as float32 values, their indices packed as side information.

  Give k (an int >= 1, at most the tensor's size) or `fraction` in (0, 1] (keeping
  max(1, round(fraction * d)) values). Bits: 32 k + ceil(k * w / 32) * 32, w = ceil(log2 d)
  (w > 16: two packed arrays).
  """
  k, fraction = check_kept("top_k", k, fraction)

  def encode(x, key, shared_key):
    x = x.reshape(-1).astype(jnp.float32)
    kept = num_kept(x.size, k, fraction, "top_k")
    _, idx = jax.lax.top_k(jnp.abs(x), kept)
    return Encoded(x[idx], pack_indices(idx, index_bits(x.size)))

  def decode(enc, spec, shared_key):
    d = math.prod(spec.shape)
    idx = unpack_indices(enc.side, enc.values.shape[0], index_bits(d))
    x = jnp.zeros((d,), jnp.float32).at[idx].set(enc.values.astype(jnp.float32))
    return x.reshape(spec.shape).astype(spec.dtype)

  return stateless(encode, decode, takes=FLOAT, emits=FLOAT)


def random_indices(shared_key: jax.Array, d: int, kept: int) -> jax.Array:
  """`kept` distinct indices into d, a uniformly random subset: those of the `kept`
  largest of d random 30-bit keys.

  The keys go to `top_k` as positive normal float32s, whose order is their bits' order;
  XLA:CPU's `top_k` is fast for floats (`jax.random.permutation`, a full sort, took
  50x longer at the CNN's 1.6M values). Equal keys (about d / 2^30 likely at the
  boundary) are broken by index.
  """
  if not 1 <= kept <= d:
    raise ValueError(f"random_indices keeps 1..d indices; got kept={kept} of d={d}.")
  keys = (prng.bits(shared_key, (d,)) >> np.uint32(2)) + np.uint32(_SMALLEST_NORMAL_BITS)
  return jax.lax.top_k(jax.lax.bitcast_convert_type(keys, jnp.float32), kept)[1]


@named
def rand_k(k: int | None = None, *, fraction: float | None = None) -> Stage:
  """k values at indices drawn from the shared key (free), decoded times d / k (unbiased).

  k and `fraction` as in `top_k`. Bits: 32 k. Every client of a round keeps the same
  indices.
  """
  k, fraction = check_kept("rand_k", k, fraction)

  def encode(x, key, shared_key):
    x = x.reshape(-1).astype(jnp.float32)
    return Encoded(x[random_indices(shared_key, x.size, num_kept(x.size, k, fraction, "rand_k"))])

  def decode(enc, spec, shared_key):
    d = math.prod(spec.shape)
    kept = enc.values.shape[0]
    idx = random_indices(shared_key, d, kept)
    x = jnp.zeros((d,), jnp.float32).at[idx].set(enc.values.astype(jnp.float32) * (d / kept))
    return x.reshape(spec.shape).astype(spec.dtype)

  return stateless(encode, decode, commutes_with_sum=True, takes=FLOAT, emits=FLOAT)
