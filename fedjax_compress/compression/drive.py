"""DRIVE (Vargaftik et al., 2021): one bit per value after a random rotation.

DRIVE rotates x, sends sign(Rx) as bits and one float32 scale S; the server decodes
R^T (S * sign(Rx)). With S = ||x||^2 / ||Rx||_1 the estimate is unbiased (over the
rotation) and its vNMSE tends to pi/2 - 1 ~ 0.571 as d grows; with S = ||Rx||_1 / d it
minimizes the squared error instead (biased, vNMSE 1 - 2/pi). `scaled_sign` is the
biased scale without the rotation.
"""

from __future__ import annotations

import jax.numpy as jnp

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.base import FLOAT, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.bitpack import bitpack
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.flat import flat, nonzero, unflat
from fedjax_compress.compression.hadamard import check_block_size, hadamard


@named
def drive_signs(*, unbiased: bool = True) -> Stage:
  """Signs of an (already rotated) vector as uint8 codes, and DRIVE's scale as side.

  Follow with `bitpack(1)`; `drive()` is the whole chain.
  """
  unbiased = check.boolean("drive_signs", "unbiased", unbiased)

  def encode(y, key, shared_key):
    y = flat(y)
    l1 = jnp.sum(jnp.abs(y))
    # A zero vector has l1 == 0: its scale is 0, so it decodes to zeros.
    safe = nonzero(l1)
    scale = jnp.sum(y * y) / safe if unbiased else l1 / y.size
    return Encoded((y >= 0).astype(jnp.uint8), jnp.where(l1 > 0, scale, 0.0))

  def decode(enc, spec, shared_key):
    signs = 2.0 * enc.values.astype(jnp.float32) - 1.0
    return unflat(enc.side * signs, spec)

  return stateless(encode, decode, takes=FLOAT, emits=codes_kind(1))


@named
def drive(*, unbiased: bool = True, block_size: int | None = None) -> Stage:
  """Randomized Hadamard rotation, then one bit per rotated coordinate plus one float32.

  Bits: ceil(n / 32) * 32 + 32, n being the size padded to a power of two (or to a
  multiple of `block_size`, see `hadamard`).
  """
  unbiased = check.boolean("drive", "unbiased", unbiased)
  block_size = check_block_size("drive", block_size)
  return chain(hadamard(block_size), drive_signs(unbiased=unbiased), bitpack(1))
