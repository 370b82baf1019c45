"""Robust wrappers: adaptive L2 clipping and zeroing, as TFF nests them.

Both track a quantile of the clients' update norms with TFF's geometric update
`C <- C * exp(-lr * (fraction_below - q))`, where each client reports whether its norm
is at most the current estimate.

Bits. The server broadcasts the norm each client needs; each client returns its
quantile record. `accounting="exact"` counts what the algorithm needs: one float32 down,
one bit up. `accounting="tff"` counts what TFF's aggregators send: down, the norm and
the estimator's sample parameters (2 float32); up, the record and its weight (2
float32) plus the int32 count of clipped or zeroed clients.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_compress.aggregators.core import Aggregator, check_accounting, with_bits


class QuantileEstimator(NamedTuple):
  """A geometric quantile tracker; `adaptive=False` keeps the initial value."""
  initial: float
  target_quantile: float
  learning_rate: float
  adaptive: bool = True

  def update(self, estimate: jax.Array, norms: jax.Array) -> jax.Array:
    if not self.adaptive:
      return estimate
    below = jnp.mean((norms <= estimate).astype(jnp.float32))
    return estimate * jnp.exp(-self.learning_rate * (below - self.target_quantile))


def _estimator_bits(accounting: str) -> dict[str, int]:
  if accounting == "tff":
    return {"uplink_aux_bits": 32 * 2 + 32, "downlink_aux_bits": 32 * 2}
  return {"uplink_aux_bits": 1, "downlink_aux_bits": 32}


def global_norm(updates, order: float = 2.0) -> jax.Array:
  """Per-client norm of the whole update pytree (leading axis: clients)."""
  leaves = [x.reshape(x.shape[0], -1) for x in jax.tree.leaves(updates)]
  if order == math.inf:
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x), axis=1) for x in leaves]), axis=0)
  if order != 2:
    raise ValueError(f"norm order {order} is not supported: use 2 or math.inf.")
  return jnp.sqrt(sum(jnp.einsum("ci,ci->c", x, x) for x in leaves))


def _scale(updates, factors):
  return jax.tree.map(lambda x: x * factors.reshape((-1,) + (1,) * (x.ndim - 1)), updates)


def clipping(inner: Aggregator, *, clip_norm: float = 1.0, target_quantile: float = 0.8,
             learning_rate: float = 0.2, adaptive: bool = True,
             accounting: str = "exact") -> Aggregator:
  """Scales each client's update to L2 norm at most C before `inner` aggregates it.

  C starts at `clip_norm` and, if `adaptive`, tracks the `target_quantile` of the norms
  (TFF's defaults: 1.0, 0.8, lr 0.2).
  """
  check_accounting(accounting)
  estimator = QuantileEstimator(clip_norm, target_quantile, learning_rate, adaptive)

  def init(template):
    return {"clip_norm": jnp.asarray(estimator.initial, jnp.float32), "inner": inner.init(template)}

  def apply(state, updates, weights, key):
    norm = state["clip_norm"]
    norms = global_norm(updates)
    factors = jnp.minimum(1.0, norm / jnp.maximum(norms, 1e-30))
    aggregate, inner_state, measurements = inner.apply(state["inner"], _scale(updates, factors),
                                                       weights, key)
    new_state = {"clip_norm": estimator.update(norm, norms), "inner": inner_state}
    measurements = {**measurements, "clipping/norm": norm,
                    "clipping/num_clipped": jnp.sum(norms > norm).astype(jnp.float32)}
    return aggregate, new_state, with_bits(measurements, weights.shape[0],
                                           **_estimator_bits(accounting))

  return Aggregator(init, apply)


def zeroing(inner: Aggregator, *, zeroing_norm: float = 10.0, target_quantile: float = 0.98,
            learning_rate: float = math.log(10.0), multiplier: float = 2.0,
            increment: float = 1.0, norm_order: float = math.inf, adaptive: bool = True,
            accounting: str = "exact") -> Aggregator:
  """Replaces by zeros any update with NaN/Inf or norm above `multiplier * Z + increment`.

  Z starts at `zeroing_norm` and, if `adaptive`, tracks the `target_quantile` of the
  `norm_order` norms (TFF's defaults: 10.0, 0.98, lr ln 10, 2Z + 1, L-inf). A zeroed
  client keeps its weight, as in TFF.
  """
  check_accounting(accounting)
  estimator = QuantileEstimator(zeroing_norm, target_quantile, learning_rate, adaptive)

  def init(template):
    return {"zeroing_norm": jnp.asarray(estimator.initial, jnp.float32),
            "inner": inner.init(template)}

  def apply(state, updates, weights, key):
    estimate = state["zeroing_norm"]
    threshold = multiplier * estimate + increment
    norms = global_norm(updates, norm_order)
    finite = jnp.isfinite(norms)
    keep = finite & (norms <= threshold)
    kept = jax.tree.map(lambda x: jnp.where(keep.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0),
                        updates)
    aggregate, inner_state, measurements = inner.apply(state["inner"], kept, weights, key)
    # A non-finite norm counts as above the estimate and never enters the exponent.
    safe_norms = jnp.where(finite, norms, jnp.inf)
    new_state = {"zeroing_norm": estimator.update(estimate, safe_norms), "inner": inner_state}
    measurements = {**measurements, "zeroing/threshold": threshold,
                    "zeroing/num_zeroed": jnp.sum(~keep).astype(jnp.float32),
                    "zeroing/num_nonfinite": jnp.sum(~finite).astype(jnp.float32)}
    return aggregate, new_state, with_bits(measurements, weights.shape[0],
                                           **_estimator_bits(accounting))

  return Aggregator(init, apply)


def gaussian_noise(inner: Aggregator, *, stddev: float) -> Aggregator:
  """Adds N(0, stddev^2) noise, drawn on the server, to each coordinate of the aggregate."""

  def apply(state, updates, weights, key):
    aggregate, state, measurements = inner.apply(state, updates, weights, key)
    leaves, treedef = jax.tree.flatten(aggregate)
    keys = jax.random.split(jax.random.fold_in(key, 0x0D9), len(leaves))
    noisy = [x + stddev * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return treedef.unflatten(noisy), state, measurements

  return Aggregator(inner.init, apply)
