"""Noise for the stages: `jax.random.bits`', `uniform`'s and `rademacher`'s values, bit
for bit, faster on CPU.

Stochastic rounding, dithering and random rotations draw one number per value of an
update (1.7 million for the FedAvg CNN, per client). JAX lowers its Threefry-2x32 hash
on XLA:CPU as a rolled loop of five blocks of rounds, each writing its full-size
intermediates to memory; the same hash written out round by round fuses into one
elementwise loop, chosen because it was faster at the CNN's size on XLA:CPU
(`python -m benchmarks.fold_cost`; benchmarks/RESULTS.md, "Fold cost").
Off CPU, and wherever they cannot reproduce JAX's values, these functions call JAX's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
_ONE_BITS = np.uint32(0x3F800000)  # float32 1.0
_MANTISSA_BITS = 23


def _rotate_left(v: jax.Array, r: int) -> jax.Array:
  return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(key: tuple[jax.Array, jax.Array], x0: jax.Array, x1: jax.Array):
  """The Threefry-2x32 block cipher (20 rounds; Salmon et al., 2011) of counters
  (x0, x1) under a key of two uint32, fully unrolled."""
  ks = (key[0], key[1], key[0] ^ key[1] ^ _PARITY)
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for block in range(5):
    for r in _ROTATIONS[block % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotate_left(x1, r)
    x0 = x0 + ks[(block + 1) % 3]
    x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
  return x0, x1


def _fast(key, shape: tuple[int, ...]) -> bool:
  """Whether to hash here: on XLA:CPU (measured there; GPUs run JAX's own Threefry
  kernel, TPUs already unroll it), and where that reproduces JAX's values: a typed
  Threefry key, JAX's partitionable counters, and a 32-bit counter space."""
  # jax's Config sets its flags as dynamic attributes, which its type hints do not declare.
  partitionable = jax.config.jax_threefry_partitionable  # type: ignore[attr-defined]
  return (
    jax.default_backend() == "cpu"
    and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    and key.shape == ()
    and str(jax.random.key_impl(key)) == "threefry2x32"
    and partitionable
    and math.prod(shape) < 2**32
  )


def _hash_bits(key, shape: tuple[int, ...]) -> jax.Array:
  data = jax.random.key_data(key)
  # JAX's counters: a 64-bit iota over the flat array, as (high, low) uint32 words.
  low = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  b0, b1 = threefry2x32((data[0], data[1]), jnp.zeros_like(low), low)
  return b0 ^ b1


def _hash_uniform(key, shape: tuple[int, ...]) -> jax.Array:
  mantissa = _hash_bits(key, shape) >> np.uint32(32 - _MANTISSA_BITS)
  floats = jax.lax.bitcast_convert_type(mantissa | _ONE_BITS, jnp.float32) - 1.0
  return jnp.maximum(floats, 0.0)


def bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Random uint32s: `jax.random.bits(key, shape)`, bit for bit."""
  shape = tuple(shape)
  return _hash_bits(key, shape) if _fast(key, shape) else jax.random.bits(key, shape)


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """float32 uniforms on [0, 1): `jax.random.uniform(key, shape)`, bit for bit.

  Traceable, and vmaps over keys like `jax.random.uniform`.
  """
  shape = tuple(shape)
  return _hash_uniform(key, shape) if _fast(key, shape) else jax.random.uniform(key, shape)


def rademacher(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """float32 random signs: `jax.random.rademacher(key, shape, jnp.float32)`, bit for bit."""
  shape = tuple(shape)
  if not _fast(key, shape):
    return jax.random.rademacher(key, shape, jnp.float32)
  # JAX's signs: +1 where a uniform (float32) falls below one half.
  return jnp.where(_hash_uniform(key, shape) < 0.5, 1.0, -1.0).astype(jnp.float32)
