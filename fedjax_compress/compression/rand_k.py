"""Random-k sparsification: k of a tensor's d values, at indices drawn from the shared key.

`rand_k` takes k indices drawn from the shared key, which the server draws too, so they
cost nothing; scaled by d / k it is unbiased, with variance (d / k - 1) x_i^2 per value,
and linear: the server sums before decoding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.compression import prng
from fedjax_compress.compression.base import FLOAT, Encoded, Stage, named, stateless
from fedjax_compress.compression.flat import flat, num_values, unflat
from fedjax_compress.compression.indices import check_kept, num_kept

_SMALLEST_NORMAL_BITS = 0x00800000  # float32 2^-126


def random_indices(shared_key: jax.Array, d: int, kept: int) -> jax.Array:
  """`kept` distinct indices into d, a uniformly random subset: those of the `kept`
  largest of d random 30-bit keys.

  The keys go to `top_k` as positive normal float32s, whose order is their bits' order;
  chosen because XLA:CPU's `top_k` is fast for floats, where `jax.random.permutation`, a
  full sort, was far slower at the CNN's 1.6M values (`python -m benchmarks.fold_cost`;
  benchmarks/RESULTS.md, "Fold cost"). Equal keys (about d / 2^30 likely at the
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
    x = flat(x)
    return Encoded(x[random_indices(shared_key, x.size, num_kept(x.size, k, fraction, "rand_k"))])

  def decode(enc, spec, shared_key):
    d = num_values(spec)
    kept = enc.values.shape[0]
    idx = random_indices(shared_key, d, kept)
    x = jnp.zeros((d,), jnp.float32).at[idx].set(enc.values.astype(jnp.float32) * (d / kept))
    return unflat(x, spec)

  return stateless(encode, decode, commutes_with_sum=True, takes=FLOAT, emits=FLOAT)
