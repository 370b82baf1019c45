"""Top-k sparsification: the k largest magnitudes of a tensor's d values.

`top_k` sends the k largest magnitudes (float32) and their indices, packed at
ceil(log2 d) bits each: it is biased.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fedjax_compress.compression.base import FLOAT, Encoded, Stage, named, stateless
from fedjax_compress.compression.flat import flat, num_values, unflat
from fedjax_compress.compression.indices import (
  check_kept,
  index_bits,
  num_kept,
  pack_indices,
  unpack_indices,
)


@named
def top_k(k: int | None = None, *, fraction: float | None = None) -> Stage:
  """The k largest |x| as float32 values, their indices packed as side information.

  Give k (an int >= 1, at most the tensor's size) or `fraction` in (0, 1] (keeping
  max(1, round(fraction * d)) values). Bits: 32 k + ceil(k * w / 32) * 32, w = ceil(log2 d)
  (w > 16: two packed arrays).
  """
  k, fraction = check_kept("top_k", k, fraction)

  def encode(x, key, shared_key):
    x = flat(x)
    kept = num_kept(x.size, k, fraction, "top_k")
    _, idx = jax.lax.top_k(jnp.abs(x), kept)
    return Encoded(x[idx], pack_indices(idx, index_bits(x.size)))

  def decode(enc, spec, shared_key):
    d = num_values(spec)
    idx = unpack_indices(enc.side, enc.values.shape[0], index_bits(d))
    x = jnp.zeros((d,), jnp.float32).at[idx].set(enc.values.astype(jnp.float32))
    return unflat(x, spec)

  return stateless(encode, decode, takes=FLOAT, emits=FLOAT)
