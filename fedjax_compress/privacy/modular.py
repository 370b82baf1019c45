"""Integers in the finite group Z_{2^b}, and their sum as secure aggregation computes it.

Secure aggregation (Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS 2017) sums vectors in Z_R: the server learns
the sum modulo R, and no client's vector. With R = 2^b a client's integer update x is
sent as x mod 2^b (`wrap`), and the server reads the sum back in the centered range
[-2^(b-1), 2^(b-1)) (`unwrap`): the true sum whenever it lies in that range, the sum
wrapped around otherwise (which a privacy mechanism makes unlikely by its choice of b
and scale; Kairouz, Liu, Steinke 2021; Agarwal, Kairouz, Liu 2021).

Decisions:
- Values live in uint32 arrays (`wrap`) whatever b is: uint32 addition wraps modulo
  2^32, a multiple of 2^b, so sums reduce modulo 2^b exactly by masking. The uint32 is
  an in-memory container; on the wire a value of Z_{2^b} is b bits, and `modular_sum`
  counts b bits per coordinate, as the protocol sends them (its masked vectors are
  uniform in Z_{2^b}, so nothing packs them smaller).
- What is not counted: secure aggregation's own overhead. In Bonawitz et al.'s protocol
  each client also sends public keys for key agreement with the others, Shamir shares
  of its mask seeds and keys (communication growing with the number of clients), and
  takes part in unmasking rounds for dropped clients; they report a total expansion of
  1.73x over the masked data for 2^10 clients and 2^20 16-bit values (1.98x for 2^14
  clients and 2^24 values). None of that is modelled: `uplink_bits` is the masked
  vector alone, the same b bits per coordinate that the protocol's data costs.
- b from 1 to 32; anything else (0, 33, 2.0, True) is refused with a ValueError.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.aggregators.base import (
  UPLINK_BITS,
  Aggregator,
  Measurements,
  set_clients,
  zero_bits,
)
from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.base import Encoded, Stage, codes_kind, named, stateless

MAX_BITS = 32


def check_modulus_bits(owner: str, bits) -> int:
  """`bits` as an int in 1..32, the b of Z_{2^b}; else a ValueError naming `owner`."""
  return check.integer(owner, "bits", bits, 1, MAX_BITS)


def _mask(bits: int) -> np.uint32:
  return np.uint32((1 << bits) - 1)


def _check_integers(owner: str, dtype, what: str = "the values") -> None:
  """Raises unless `dtype` is a signed or unsigned integer (bool is not)."""
  dtype = np.dtype(dtype)
  if not np.issubdtype(dtype, np.integer):
    raise ValueError(
      f"{owner}: {what} are {dtype} but must be integers (int32, uint32, int8, ...): "
      f"round them first (privacy.rounding.randomized_round)."
    )


def wrap(x: jax.Array, bits: int) -> jax.Array:
  """x mod 2^bits as uint32 in [0, 2^bits): two's complement, so -1 becomes 2^bits - 1.

  `x` holds integers of any width, signed or unsigned (int64 under `jax_enable_x64`);
  floats and bools are refused.
  """
  bits = check_modulus_bits("wrap", bits)
  x = jnp.asarray(x)
  _check_integers("wrap", x.dtype)
  if jnp.issubdtype(x.dtype, jnp.signedinteger) and x.dtype.itemsize < 4:
    x = x.astype(jnp.int32)  # sign-extends narrower integers
  # To uint32 is modulo 2^32 from int32 and from 64-bit integers alike.
  return x.astype(jnp.uint32) & _mask(bits)


def unwrap(u: jax.Array, bits: int) -> jax.Array:
  """The element of Z_{2^bits} that `u` stands for, in the centered range, as int32.

  u mod 2^bits mapped to [-2^(bits-1), 2^(bits-1)): values from 2^(bits-1) up stand for
  negatives. `unwrap(wrap(x, b), b) == x` for every x in that range; bits=1 gives 0 and
  -1. Takes integers of any width, as `wrap` does.
  """
  bits = check_modulus_bits("unwrap", bits)
  shift = np.uint32(MAX_BITS - bits)
  v = wrap(u, bits) << shift  # the sign bit of Z_{2^bits} to bit 31
  return jax.lax.shift_right_arithmetic(
    jax.lax.bitcast_convert_type(v, jnp.int32), jnp.int32(MAX_BITS - bits)
  )


def modular_add(a: jax.Array, b: jax.Array, bits: int) -> jax.Array:
  """(a + b) mod 2^bits for uint32 values of Z_{2^bits}."""
  bits = check_modulus_bits("modular_add", bits)
  return (a.astype(jnp.uint32) + b.astype(jnp.uint32)) & _mask(bits)


class ModularPartial(NamedTuple):
  """`modular_sum`'s partial result of a round.

  Attributes:
    sums: per leaf of the update, uint32: the clients' values summed in Z_{2^b} so far.
    bits: the per-client bit counters (`BIT_KEYS`), filled as clients are added.
  """

  sums: tuple
  bits: Measurements


def _leaves(owner: str, tree) -> list:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  for path, leaf in leaves:
    where = f" of leaf {jax.tree_util.keystr(path)}" if path else ""
    _check_integers(owner, leaf.dtype, f"the values{where}")
  return [leaf for _, leaf in leaves]


def modular_sum(bits: int) -> Aggregator:
  """The sum of integer client updates in Z_{2^bits}, as secure aggregation computes it.

  Each client sends every coordinate of its update as an element of Z_{2^bits}
  (`wrap`); the server adds them modulo 2^bits and returns the sum, read in the
  centered range [-2^(bits-1), 2^(bits-1)) (`unwrap`) as int32 of the update's
  structure: the true sum when it lies in that range, wrapped around when not.

  Takes updates whose leaves are integers of any width (round float updates
  first: `privacy.rounding`); floats are refused, naming the leaf. The sum is
  unweighted: secure aggregation sums what clients send, so `weights` are ignored
  (scale before rounding to weight). Streams: the partial result is one uint32 sum per
  leaf and the bit counters, whatever the cohort.

  Bits: exactly `bits` per coordinate of each client's update under `uplink_bits`, the
  size of the protocol's masked vector; nothing else is sent (no weight, no side
  information). The in-memory uint32 is a container, not what travels. Secure
  aggregation's own overhead (key agreement, secret shares, unmasking; Bonawitz et al.,
  CCS 2017) is not counted: see the module docstring.

  Args:
    bits: b, from 1 to 32.
  """
  bits = check_modulus_bits("modular_sum", bits)
  owner = f"modular_sum(bits={bits})"

  def init(template):
    _leaves(owner, template)
    return ()

  def start(state, spec, num_clients):
    leaves = _leaves(owner, spec)
    per_client = bits * sum(math.prod(leaf.shape) for leaf in leaves)
    if per_client >= 2**31:
      raise ValueError(
        f"{owner}: a client payload of {per_client} bits exceeds the int32 bit counter."
      )
    return ModularPartial(
      tuple(jnp.zeros(leaf.shape, jnp.uint32) for leaf in leaves), zero_bits(num_clients)
    )

  def accumulate(state, partial, updates, weights, clients, key):
    leaves = _leaves(owner, updates)
    sums = tuple(
      modular_add(total, jnp.sum(wrap(x, bits), axis=0, dtype=jnp.uint32), bits)
      for total, x in zip(partial.sums, leaves)
    )
    per_client = bits * sum(math.prod(x.shape[1:]) for x in leaves)
    uplink = set_clients(
      partial.bits[UPLINK_BITS], clients.index, jnp.full(clients.index.shape, per_client, jnp.int32)
    )
    return ModularPartial(sums, {**partial.bits, UPLINK_BITS: uplink}), ()

  def finish(state, partial, spec, key):
    treedef = jax.tree.structure(spec)
    # jaxlib ships no stub for PyTreeDef (jax.tree.structure's type).
    aggregate = treedef.unflatten(  # type: ignore[attr-defined]
      [unwrap(total, bits) for total in partial.sums]
    )
    return aggregate, state, partial.bits

  return Aggregator(init, start, accumulate, finish)


def container_dtype(bits: int):
  """The narrowest unsigned dtype that holds values of Z_{2^bits}: uint8, uint16, uint32."""
  bits = check_modulus_bits("container_dtype", bits)
  return jnp.uint8 if bits <= 8 else jnp.uint16 if bits <= 16 else jnp.uint32


@named
def modular_wrap(bits: int) -> Stage:
  """A stage: integers to Z_{2^bits} (`wrap`), and back to the centered range (`unwrap`).

  It commutes with summation: the sum of wrapped values, taken modulo 2^bits, unwraps
  to the true sum whenever that lies in [-2^(bits-1), 2^(bits-1)); so `encoded_sum`
  sums the wrapped values and decodes once, as secure aggregation would. Takes integer
  tensors (floats are refused when traced, naming the stage: round them first); emits
  `codes_kind(bits)`. Decodes to the input's dtype, so sum int32 tensors (a narrower
  dtype would cut the sum).

  Bits: values travel in the narrowest of uint8 / uint16 / uint32 that holds them (sums
  of those wrap modulo 2^8, 2^16, 2^32, multiples of 2^bits), and `encoded_sum` counts a
  value at its container's width: exact for bits = 8, 16 and 32, more than the b bits
  the protocol sends otherwise. `modular_sum(bits)` counts exactly b bits at any b.
  """
  bits = check_modulus_bits("modular_wrap", bits)
  owner = f"modular_wrap(bits={bits})"
  container = container_dtype(bits)

  def encode(x, key, shared_key):
    _check_integers(owner, x.dtype)
    return Encoded(wrap(x, bits).astype(container))

  def decode(enc, spec, shared_key):
    return unwrap(enc.values, bits).astype(spec.dtype)

  return stateless(encode, decode, commutes_with_sum=True, emits=codes_kind(bits))
