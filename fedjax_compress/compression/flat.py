"""Helpers of stages that work on a tensor as one float32 vector.

Most stages flatten their input to a float32 vector (`flat`), compute on it, and
decode back to the input's shape and dtype (`unflat`); scales divide by a norm that is
zero for a zero tensor (`nonzero`). Each helper is the one expression the stages wrote
inline, so a stage that uses it computes the same values, bit for bit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fedjax_compress.compression.base import Spec


def flat(x: jax.Array) -> jax.Array:
  """`x` as a vector of float32 values (a stage's input, flattened)."""
  return x.reshape(-1).astype(jnp.float32)


def unflat(x: jax.Array, spec: Spec) -> jax.Array:
  """A decoded vector back in the shape and dtype of the stage's input `spec`."""
  return x.reshape(spec.shape).astype(spec.dtype)


def num_values(spec: Spec) -> int:
  """The number of values of a tensor of `spec`."""
  return math.prod(spec.shape)


def nonzero(denominator: jax.Array) -> jax.Array:
  """`denominator` where it is positive, else 1: a divisor for a norm or count that is 0
  for a zero tensor (whose quotient the stage then ignores or scales by 0)."""
  return jnp.where(denominator > 0, denominator, 1.0)
