"""Randomized rounding to integers, unconditional and conditioned on a norm bound.

Before secure aggregation, a client's scaled (and rotated) update is rounded to
integers. Unbiased randomized rounding keeps the sum unbiased; for differential privacy
the rounded vector's L2 norm must be bounded too, since it is the sensitivity the noise
is calibrated to. Kairouz, Liu, Steinke ("The Distributed Discrete Gaussian Mechanism
for Federated Learning with Secure Aggregation", ICML 2021) redraw the rounding until
its norm is within a bound that one draw meets with probability at least 1 - beta
(`rounding_norm_bound`): conditional randomized rounding.

Values are int32 (also with `jax_enable_x64`); inputs are float32 and must lie within
int32's range (values of magnitude 2^24 or more are already integers in float32, and
round to themselves).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression import prng

DEFAULT_BETA = math.exp(-0.5)  # Kairouz et al.'s choice in their experiments
DEFAULT_MAX_TRIES = 100
_UNIT_ROUNDOFF = 2.0**-24  # float32


class ConditionalRounding(NamedTuple):
  """The result of `conditional_randomized_round`.

  Attributes:
    values: int32, the first randomized rounding whose L2 norm is within the bound; all
      zeros if none of `tries` draws was (norm 0 is within any bound).
    tries: int32 [], how many roundings were drawn (1 to max_tries).
    accepted: bool [], whether a rounding within the bound was found. False means
      `values` are zeros, not a rounding of the input: count it, drop the client or
      raise, but do not read it as the client's update.
  """

  values: jax.Array
  tries: jax.Array
  accepted: jax.Array


def randomized_round(key: jax.Array, x: jax.Array) -> jax.Array:
  """Unbiased randomized rounding: floor(x) + Bernoulli(x - floor(x)), as int32.

  E[randomized_round(x)] = x coordinate by coordinate, and each coordinate moves by less
  than 1. The Bernoulli compares a float32 uniform on [0, 1) (`prng.uniform`, JAX's
  values, 2^-23 apart) with the fractional part, so P(round up) is the fractional part
  rounded up to a multiple of 2^-23: unbiased to within 2^-23 per coordinate. Integer
  inputs are returned as they are (as int32).

  Args:
    key: a JAX PRNG key; coordinates get independent draws.
    x: the values (float32, or integers), within int32's range.
  """
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(jnp.int32)
  x = x.astype(jnp.float32)
  low = jnp.floor(x)
  up = prng.uniform(key, x.shape) < x - low
  return (low + up.astype(jnp.float32)).astype(jnp.int32)


def rounding_norm_bound(norm: float, dim: int, beta: float = DEFAULT_BETA) -> float:
  """A bound on ||randomized_round(x)||_2 that one draw meets with probability >= 1 - beta.

  For ||x||_2 <= norm in dimension `dim` (integer units, i.e. after scaling),
  Kairouz, Liu, Steinke (2021, conditional randomized rounding) bound the rounded norm
  by sqrt(norm^2 + dim/4 + sqrt(2 log(1/beta)) (norm + sqrt(dim)/2)) with probability
  at least 1 - beta. Every coordinate moves by less than 1, so norm + sqrt(dim) bounds
  it always; this returns the smaller of the two (that minimum is their Delta_2 as
  well). beta = 0 asks for certainty: norm + sqrt(dim).

  Args:
    norm: the bound on the input's L2 norm, >= 0.
    dim: the number of coordinates, >= 0.
    beta: the probability that one draw may exceed the bound, in [0, 1); Kairouz et
      al. use exp(-1/2) (the default), so one draw succeeds with probability >= 0.39.
  """
  owner = "rounding_norm_bound"
  norm = check.real(owner, "norm", norm, 0.0)
  dim = check.integer(owner, "dim", dim, 0)
  beta = check.real(owner, "beta", beta, 0.0, 1.0, hi_open=True)
  always = norm + math.sqrt(dim)
  if beta == 0:
    return always
  likely = math.sqrt(
    norm**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dim) / 2)
  )
  return min(likely, always)


def _pairwise_sum(v: jax.Array) -> tuple[jax.Array, int]:
  """The pairwise (tree) sum of the flat float32 `v`, and the tree's depth."""
  v = v.reshape(-1)
  size = 1 << max(v.size - 1, 0).bit_length()
  v = jnp.pad(v, (0, size - v.size))
  depth = 0
  while v.size > 1:
    half = v.size // 2
    v, depth = v[:half] + v[half:], depth + 1
  return v[0], depth


def within_norm(values: jax.Array, norm_bound) -> jax.Array:
  """Whether the integers `values` have L2 norm <= `norm_bound`, never wrongly True.

  The squared norm is summed in float32 as a pairwise tree of depth L = ceil(log2 n)
  (int32 squares would overflow at the norms privacy uses), whose relative error is at
  most about (L + 1) 2^-24; the test compares it with norm_bound^2 shrunk by
  (L + 4) 2^-23, more than that error and the roundings of the bound itself, so a True
  is exact: the true squared norm is within the bound. A vector whose squared norm is
  within a relative (L + 4) 2^-23 (3e-6 for a million coordinates) below the squared
  bound may be refused.
  """
  squares = jnp.square(values.astype(jnp.float32))
  total, depth = _pairwise_sum(squares)
  bound = jnp.asarray(norm_bound, jnp.float32)
  threshold = (bound * bound) * np.float32(1.0 - (depth + 4) * 2 * _UNIT_ROUNDOFF)
  return total <= threshold


def conditional_randomized_round(
  key: jax.Array, x: jax.Array, norm_bound, max_tries: int = DEFAULT_MAX_TRIES
) -> ConditionalRounding:
  """Randomized rounding of `x`, redrawn until its L2 norm is within `norm_bound`.

  Kairouz, Liu, Steinke (2021)'s conditional randomized rounding: the rounded vector's
  norm, the sensitivity the privacy noise is calibrated to, is then bounded with
  certainty. Draw i (from 0) is `randomized_round(jax.random.fold_in(key, i), x)`, in a
  `lax.while_loop` that stops at the first draw within the bound (`within_norm`, which
  never accepts a norm over it). Conditioning biases the rounding slightly toward
  smaller norms; with `rounding_norm_bound`'s bound one draw succeeds with probability
  at least 1 - beta, so the bias is small (Kairouz et al. bound it).

  Never silently over the bound: if none of `max_tries` draws is within it, `values`
  are zeros and `accepted` is False (see `ConditionalRounding`). With beta = exp(-1/2)
  that happens with probability at most beta^max_tries (e^-50, 2e-22, for 100 tries),
  for inputs within the norm the bound was computed for.

  Args:
    key: a JAX PRNG key.
    x: the (scaled) values, float32 within int32's range.
    norm_bound: the bound, >= 0: a Python number (checked) or a traced scalar.
    max_tries: how many roundings to draw at most, an int >= 1.

  Returns:
    `ConditionalRounding(values, tries, accepted)`.
  """
  owner = "conditional_randomized_round"
  if not isinstance(norm_bound, jax.core.Tracer):
    if isinstance(norm_bound, (jax.Array, np.ndarray, np.generic)) and np.ndim(norm_bound) == 0:
      norm_bound = norm_bound.item()
    check.real(owner, "norm_bound", norm_bound, 0.0)
  max_tries = check.integer(owner, "max_tries", max_tries, 1)
  return _conditional_round(key, jnp.asarray(x), norm_bound, max_tries)


@functools.partial(jax.jit, static_argnums=3)
def _conditional_round(key, x, norm_bound, max_tries):
  # Jitted, so that eager calls compile once per shape rather than once per call.
  def draw(carry):
    i, values, _ = carry
    rounded = randomized_round(jax.random.fold_in(key, i), x)
    ok = within_norm(rounded, norm_bound)
    return i + 1, jnp.where(ok, rounded, values), ok

  init = (jnp.zeros((), jnp.int32), jnp.zeros(x.shape, jnp.int32), jnp.zeros((), bool))
  tries, values, accepted = jax.lax.while_loop(lambda c: ~c[2] & (c[0] < max_tries), draw, init)
  return ConditionalRounding(values, tries, accepted)
