"""Which values a sparsifying stage keeps: how many, and their indices packed at their width.

Shared by `top_k` and `rand_k`: `check_kept` / `num_kept` read the count (k or a
fraction of the tensor), `pack_indices` / `unpack_indices` send indices into d values
at ceil(log2 d) bits each.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.bitpack import pack, unpack


def check_kept(owner: str, k, fraction) -> tuple[int | None, float | None]:
  """(k, fraction) if exactly one is given, k an int >= 1 or fraction in (0, 1]."""
  if (k is None) == (fraction is None):
    raise ValueError(
      f"{owner}: give exactly one of k and fraction (got k={k!r}, fraction={fraction!r})."
    )
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
    assert fraction is not None  # check_kept returns exactly one of them
    return max(1, round(fraction * d))
  if k > d:
    raise ValueError(
      f"{owner}: k={k} is invalid for a tensor of {d} values: it must be in "
      f"1..{d}; lower k, or encode only tensors larger than k (threshold >= k)."
    )
  return k


def index_bits(d: int) -> int:
  """Bits of one index into d coordinates: ceil(log2 d), at least 1."""
  return max(1, math.ceil(math.log2(d)))


def _chunks(width):
  # `pack` takes codes of up to 16 bits: wider indices go as a 16-bit and a rest part.
  return [(lo, min(16, width - lo)) for lo in range(0, width, 16)]


def pack_indices(idx: jax.Array, width: int) -> tuple[jax.Array, ...]:
  """Indices < 2^width as dense uint32 words, `width` bits each (one array per 16 bits)."""
  idx = idx.astype(jnp.uint32)
  return tuple(pack((idx >> lo) & (2**w - 1), w) for lo, w in _chunks(width))


def unpack_indices(words: tuple[jax.Array, ...], k: int, width: int) -> jax.Array:
  """Indices from their packed form, inverse of the packing in `top_k`."""
  idx = jnp.zeros((k,), jnp.uint32)
  for part, (lo, w) in zip(words, _chunks(width)):
    idx |= unpack(part, k, w) << lo
  return idx.astype(jnp.int32)
