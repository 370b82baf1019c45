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
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_compress.aggregators.base import (
  Aggregator,
  Partial,
  State,
  check_accounting,
  set_clients,
  with_bits,
  wrap,
)
from fedjax_compress.streams import NOISE_STREAM


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


# The states of the wrappers. Checkpoints hold an aggregator's state; these fields are in
# the order of the dict keys that the states had (sorted), so that the leaves and the
# names of older checkpoints stay the same.


class ClippingState(NamedTuple):
  """`clipping`'s state: the clip norm C, and the state of the aggregator it wraps."""

  clip_norm: jax.Array  # float32
  inner: State

  @property
  def estimate(self) -> jax.Array:
    return self.clip_norm

  @classmethod
  def of(cls, estimate: jax.Array, inner: State) -> ClippingState:
    return cls(clip_norm=estimate, inner=inner)


class ZeroingState(NamedTuple):
  """`zeroing`'s state: the state of the aggregator it wraps, and the tracked norm Z."""

  inner: State
  zeroing_norm: jax.Array  # float32

  @property
  def estimate(self) -> jax.Array:
    return self.zeroing_norm

  @classmethod
  def of(cls, estimate: jax.Array, inner: State) -> ZeroingState:
    return cls(inner=inner, zeroing_norm=estimate)


NormState = ClippingState | ZeroingState


class NormTrackingPartial(NamedTuple):
  """A norm-tracking wrapper's partial result: the inner one, and every client's norm."""

  inner: Partial
  norms: jax.Array  # float32 [num_clients]


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


def _norm_tracking(
  inner: Aggregator,
  estimator: QuantileEstimator,
  state_type: type[ClippingState] | type[ZeroingState],
  transform,
  report,
  accounting: str,
) -> Aggregator:
  """A wrapper that transforms each update given the tracked norm estimate, then updates
  the estimate from all the round's norms (kept per client in the partial result).

  Its state is a `state_type`; `transform(estimate, updates) -> (updates, norms)`;
  `report(estimate, norms) -> dict` of scalar measurements.
  """
  check_accounting(accounting)

  def init(template) -> NormState:
    return state_type.of(jnp.asarray(estimator.initial, jnp.float32), inner.init(template))

  def start(state: NormState, spec, num_clients):
    return NormTrackingPartial(
      inner.start(state.inner, spec, num_clients), jnp.zeros((num_clients,), jnp.float32)
    )

  def accumulate(state: NormState, partial: NormTrackingPartial, updates, weights, clients, key):
    updates, norms = transform(state.estimate, updates)
    inner_partial, client_states = inner.accumulate(
      state.inner, partial.inner, updates, weights, clients, key
    )
    return (
      NormTrackingPartial(inner_partial, set_clients(partial.norms, clients.index, norms)),
      client_states,
    )

  def finish(state: NormState, partial: NormTrackingPartial, spec, key):
    aggregate, inner_state, measurements = inner.finish(state.inner, partial.inner, spec, key)
    norms = partial.norms
    new_state = state_type.of(estimator.update(state.estimate, norms), inner_state)
    measurements = {**measurements, **report(state.estimate, norms)}
    return (
      aggregate,
      new_state,
      with_bits(measurements, norms.shape[0], **_estimator_bits(accounting)),
    )

  return wrap(inner, init=init, start=start, accumulate=accumulate, finish=finish)


def clipping(
  inner: Aggregator,
  *,
  clip_norm: float = 1.0,
  target_quantile: float = 0.8,
  learning_rate: float = 0.2,
  adaptive: bool = True,
  accounting: str = "exact",
) -> Aggregator:
  """Scales each client's update to L2 norm at most C before `inner` aggregates it.

  C starts at `clip_norm` and, if `adaptive`, tracks the `target_quantile` of the norms
  (TFF's defaults: 1.0, 0.8, lr 0.2).
  """
  estimator = QuantileEstimator(clip_norm, target_quantile, learning_rate, adaptive)

  def transform(norm, updates):
    norms = global_norm(updates)
    factors = jnp.minimum(1.0, norm / jnp.maximum(norms, 1e-30))
    return _scale(updates, factors), norms

  def report(norm, norms):
    return {
      "clipping/norm": norm,
      "clipping/num_clipped": jnp.sum(norms > norm).astype(jnp.float32),
    }

  return _norm_tracking(inner, estimator, ClippingState, transform, report, accounting)


def zeroing(
  inner: Aggregator,
  *,
  zeroing_norm: float = 10.0,
  target_quantile: float = 0.98,
  learning_rate: float = math.log(10.0),
  multiplier: float = 2.0,
  increment: float = 1.0,
  norm_order: float = math.inf,
  adaptive: bool = True,
  accounting: str = "exact",
) -> Aggregator:
  """Replaces by zeros any update with NaN/Inf or norm above `multiplier * Z + increment`.

  Z starts at `zeroing_norm` and, if `adaptive`, tracks the `target_quantile` of the
  `norm_order` norms (TFF's defaults: 10.0, 0.98, lr ln 10, 2Z + 1, L-inf). A zeroed
  client keeps its weight, as in TFF.
  """
  estimator = QuantileEstimator(zeroing_norm, target_quantile, learning_rate, adaptive)
  threshold_of = lambda estimate: multiplier * estimate + increment

  def transform(estimate, updates):
    norms = global_norm(updates, norm_order)
    keep = jnp.isfinite(norms) & (norms <= threshold_of(estimate))
    kept = jax.tree.map(
      lambda x: jnp.where(keep.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0), updates
    )
    # A non-finite norm counts as above the estimate and never enters the exponent.
    return kept, jnp.where(jnp.isfinite(norms), norms, jnp.inf)

  def report(estimate, norms):
    threshold = threshold_of(estimate)
    return {
      "zeroing/threshold": threshold,
      "zeroing/num_zeroed": jnp.sum(~(norms <= threshold)).astype(jnp.float32),
      "zeroing/num_nonfinite": jnp.sum(jnp.isinf(norms)).astype(jnp.float32),
    }

  return _norm_tracking(inner, estimator, ZeroingState, transform, report, accounting)


def gaussian_noise(inner: Aggregator, *, stddev: float | Callable[[], float]) -> Aggregator:
  """Adds N(0, stddev^2) noise, drawn on the server, to each coordinate of the aggregate.

  `stddev` may be a function, called when the round is traced (a noise level calibrated
  once the run's population is known).
  """

  def finish(state, partial, spec, key):
    aggregate, state, measurements = inner.finish(state, partial, spec, key)
    std = stddev() if callable(stddev) else stddev
    leaves, treedef = jax.tree.flatten(aggregate)
    keys = jax.random.split(jax.random.fold_in(key, NOISE_STREAM), len(leaves))
    noisy = [x + std * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy), state, measurements

  return wrap(inner, finish=finish)
