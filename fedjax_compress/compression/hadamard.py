"""Randomized Hadamard rotation: x -> H D x / sqrt(n), padded to a power of two.

The signs D come from the shared key, which the server derives from the round key: both
sides know them, so they cost no bits. Every client of a round uses the same rotation,
so the stage is linear across clients and commutes with summation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression import prng
from fedjax_compress.compression.base import FLOAT, Encoded, Stage, named, stateless
from fedjax_compress.compression.flat import flat, num_values, unflat


def fwht(x: jax.Array) -> jax.Array:
  """Unnormalized fast Walsh-Hadamard transform of a vector whose length is 2^k.

  k butterfly levels, the widest first, each on a rank-3 view [-1, 2, half]: chosen
  because XLA:CPU ran it faster than the same levels on a rank-k view [2, 2, ..., 2],
  with the same values bit for bit (`python -m benchmarks.fold_cost`;
  benchmarks/RESULTS.md, "Fold cost").
  """
  n = x.shape[0]
  k = n.bit_length() - 1
  if n != 1 << k:
    raise ValueError(f"fwht needs a power-of-two length, got {n}.")
  for level in range(k):
    pairs = x.reshape(-1, 2, n >> (level + 1))
    a, b = pairs[:, 0], pairs[:, 1]
    x = jnp.stack([a + b, a - b], axis=1).reshape(n)
  return x


def padded_size(n: int) -> int:
  """The smallest power of two >= n: the length of a rotated vector."""
  return 1 << max(n - 1, 0).bit_length()


def _signs(shared_key, n):
  return prng.rademacher(shared_key, (n,))


def check_block_size(owner: str, block_size) -> int | None:
  """`block_size` if it is None or a power-of-two int; else a ValueError naming `owner`."""
  return check.power_of_two(owner, "block_size", block_size, or_none=True)


@named
def hadamard(block_size: int | None = None) -> Stage:
  """Flattens, pads and rotates (orthogonal, exact inverse).

  Args:
    block_size: None rotates the whole vector, padded to the next power of two (a 1.6M
      tensor then sends 2^21 values, 1.26x). A power of two B rotates consecutive blocks
      of B values, padding only to a multiple of B (block-diagonal, still orthogonal).
  """
  block_size = check_block_size("hadamard", block_size)

  def padded(n):
    return padded_size(n) if block_size is None else -(-n // block_size) * block_size

  def rotate(x):
    rows = x.reshape(-1, block_size or x.size)
    return jax.vmap(fwht)(rows).reshape(-1) / math.sqrt(rows.shape[1])

  def encode(x, key, shared_key):
    x = flat(x)
    n = padded(x.size)
    x = jnp.pad(x, (0, n - x.size))
    return Encoded(rotate(_signs(shared_key, n) * x))

  def decode(enc, spec, shared_key):
    n = enc.values.shape[-1]
    x = _signs(shared_key, n) * rotate(enc.values)
    return unflat(x[: num_values(spec)], spec)

  return stateless(encode, decode, commutes_with_sum=True, takes=FLOAT, emits=FLOAT)
