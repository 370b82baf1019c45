"""The aggregator interface and the per-client bit counters it reports.

Payload sizing (`payload_bits`, `measured_bits`) is in `compression.bits`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

PyTree = Any
State = Any  # the aggregator's state, kept across rounds (and checkpointed)
Partial = Any  # a round's partial result, from `start` through `accumulate` to `finish`
Measurements = dict[str, jax.Array]

# Per-client int32 [clients] bit counts that aggregators report in their measurements.
UPLINK_BITS = "uplink_bits"  # the encoded model update: values and their side information
UPLINK_AUX_BITS = "uplink_aux_bits"  # other values clients send: weights, quantile records
DOWNLINK_AUX_BITS = "downlink_aux_bits"  # aggregator state broadcast to clients: clip norms
BIT_KEYS = (UPLINK_BITS, UPLINK_AUX_BITS, DOWNLINK_AUX_BITS)
ACCOUNTINGS = ("exact", "tff")


@functools.partial(
  jax.tree_util.register_dataclass, data_fields=["index", "states"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True)
class Clients:
  """The clients of one `accumulate` call (a pytree: `index`, then `states`).

  A dataclass rather than a NamedTuple: its field `index` would shadow `tuple.index`.

  Attributes:
    index: int32 [chunk], each client's position in the round's cohort. Per-client
      randomness derives from it, so a cohort streamed in chunks draws what it draws
      whole.
    states: the clients' rows of the client-state table ([chunk, ...]), or () for an
      aggregator without per-client state.
  """

  index: jax.Array
  states: Any = ()


class InitFn(Protocol):
  """`init(template) -> state`, `template` being one client's update."""

  def __call__(self, template: PyTree, /) -> State: ...


class StartFn(Protocol):
  """`start(state, spec, num_clients) -> partial`: a round's empty partial result."""

  def __call__(self, state: State, spec: PyTree, num_clients: int, /) -> Partial: ...


class AccumulateFn(Protocol):
  """`accumulate(state, partial, updates, weights, clients, key) -> (partial,
  client_states)`: a chunk of clients folded into the partial result."""

  def __call__(
    self,
    state: State,
    partial: Partial,
    updates: PyTree,
    weights: jax.Array,
    clients: Clients,
    key: jax.Array,
    /,
  ) -> tuple[Partial, PyTree]: ...


class FinishFn(Protocol):
  """`finish(state, partial, spec, key) -> (aggregate, new_state, measurements)`."""

  def __call__(
    self, state: State, partial: Partial, spec: PyTree, key: jax.Array, /
  ) -> tuple[PyTree, State, Measurements]: ...


class ClientInitFn(Protocol):
  """`client_init(template) -> one client's initial state`."""

  def __call__(self, template: PyTree, /) -> PyTree: ...


class PrivacyFn(Protocol):
  """`privacy(template) -> privacy.DpPlan`: a private aggregator's resolved plan."""

  def __call__(self, template: PyTree, /) -> Any: ...


class Aggregator(NamedTuple):
  """Turns client updates into one aggregate, as pure functions, in a streaming form.

  A round is `start`, one or more `accumulate` calls over chunks of its clients (all of
  them at once, or one at a time: the result is the same), and `finish`
  (`learning.rounds`: `begin` starts, `fold` folds clients in, `end` finishes). Memory grows
  with the chunk, not the cohort: partial results hold sums and per-client scalars.

  Attributes:
    init: `init(template) -> state`, `template` being one client's update (arrays or
      `jax.ShapeDtypeStruct`s).
    start: `start(state, spec, num_clients) -> partial`, `spec` one client's update as
      `ShapeDtypeStruct`s, `num_clients` the cohort.
    accumulate: `accumulate(state, partial, updates, weights, clients, key) ->
      (partial, client_states)`. `updates` has a leading client axis (a chunk),
      `weights` is float32 [chunk], `clients` a `Clients`; returns the clients' new rows
      of the client-state table (() without per-client state).
    finish: `finish(state, partial, spec, key) -> (aggregate, new_state, measurements)`;
      `measurements` holds each client's bits under `BIT_KEYS` ([num_clients]).
    client_init: `client_init(template) -> one client's initial state` for aggregators
      that keep state per client across rounds (error feedback); None otherwise.
    privacy: `privacy(template) -> privacy.DpPlan` for a differentially private
      aggregator: its resolved noise, clip and bits, and its accounting (the training
      loop logs epsilon round by round from it); None for one that is not private.
  """

  init: InitFn
  start: StartFn
  accumulate: AccumulateFn
  finish: FinishFn
  client_init: ClientInitFn | None = None
  privacy: PrivacyFn | None = None

  def apply(self, state, updates, weights, key):
    """The whole cohort at once: `(aggregate, new_state, measurements)`."""
    if self.client_init is not None:
      raise ValueError(
        "This aggregator keeps per-client state (e.g. error feedback): call "
        "apply_with_clients(state, updates, weights, key, client_states)."
      )
    return self.apply_with_clients(state, updates, weights, key, ())[:3]

  def apply_with_clients(self, state, updates, weights, key, client_states):
    """The whole cohort at once: `(aggregate, new_state, measurements, client_states)`."""
    num_clients = weights.shape[0]
    spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), updates)
    partial = self.start(state, spec, num_clients)
    clients = Clients(jnp.arange(num_clients, dtype=jnp.int32), client_states)
    partial, client_states = self.accumulate(state, partial, updates, weights, clients, key)
    return (*self.finish(state, partial, spec, key), client_states)


def wrap(
  inner: Aggregator,
  *,
  init: InitFn | None = None,
  start: StartFn | None = None,
  accumulate: AccumulateFn | None = None,
  finish: FinishFn | None = None,
  privacy: PrivacyFn | None = None,
) -> Aggregator:
  """`inner` with some of its functions replaced: wrappers change what they need."""
  return Aggregator(
    init or inner.init,
    start or inner.start,
    accumulate or inner.accumulate,
    finish or inner.finish,
    inner.client_init,
    privacy or inner.privacy,
  )


def zero_bits(num_clients: int) -> Measurements:
  """Per-client bit counters, all zero, for a partial result."""
  return {k: jnp.zeros((num_clients,), jnp.int32) for k in BIT_KEYS}


def set_clients(per_client: jax.Array, index: jax.Array, values) -> jax.Array:
  """Writes the values of a chunk's clients into a [num_clients, ...] array."""
  return per_client.at[index].set(jnp.asarray(values, per_client.dtype))


def per_client_bits(bits: int | jax.Array, num_clients: int) -> jax.Array:
  """Per-client int32 counters from a static count or from measured counts [clients]."""
  if isinstance(bits, int):
    if bits >= 2**31:
      raise ValueError(f"A client payload of {bits} bits exceeds the int32 bit counter.")
    return jnp.full((num_clients,), bits, jnp.int32)
  return jnp.broadcast_to(bits.astype(jnp.int32), (num_clients,))


def sum_over_clients(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """sum_c weights[c] * x[c] over the leading client axis, as a matrix-vector product.

  Chosen because XLA:CPU ran the fused `jnp.sum(x * w[:, None, None], axis=0)` over ten
  CNN dense kernels far slower than this product of [clients] by [clients, n]
  (benchmarks/RESULTS.md, "Summing updates over clients"; the script is in git history:
  `git log -- benchmarks/client_sum.py`).
  """
  flat = x.reshape(x.shape[0], -1)
  if weights is None:
    weights = jnp.ones(x.shape[0], flat.dtype)
  return (weights.astype(flat.dtype) @ flat).reshape(x.shape[1:])


def bit_measurements(num_clients: int, **bits: int | jax.Array) -> Measurements:
  """Per-client counters for `BIT_KEYS`, e.g. `bit_measurements(10, uplink_aux_bits=32)`."""
  unknown = set(bits) - set(BIT_KEYS)
  if unknown:
    raise ValueError(f"Unknown bit counters {sorted(unknown)}; valid: {BIT_KEYS}.")
  return {k: per_client_bits(bits.get(k, 0), num_clients) for k in BIT_KEYS}


def with_bits(measurements: Measurements, num_clients: int, **bits: int) -> Measurements:
  """Adds a wrapper's own per-client bits to the counters of the aggregator it wraps."""
  extra = bit_measurements(num_clients, **bits)
  return {**measurements, **{k: measurements.get(k, 0) + extra[k] for k in BIT_KEYS}}


def check_accounting(accounting: str) -> str:
  """Returns `accounting` if it is a valid bit accounting mode, else raises."""
  if accounting not in ACCOUNTINGS:
    raise ValueError(f"bit_accounting={accounting!r}; valid: {ACCOUNTINGS}.")
  return accounting
