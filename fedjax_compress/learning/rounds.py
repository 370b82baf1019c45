"""One round of federated averaging as three pure functions: `begin`, `fold`, `end`.

    start = begin(setup, state, rows, key, num_clients)   # broadcast, keys, empty results
    results = fold(setup, start.results, start.context, outputs, index)   # per client/chunk
    state, metrics = end(setup, state, results, start.context, start.broadcast_bits)

`fold` may run once for the whole cohort (`vmap`, `sharded`) or once per client or chunk
(`sequential`, `chunked`): the execution strategies in `runners` differ only in how they
call these three functions. All three are traceable; `setup` is static (bind it with
`functools.partial` before `jax.jit`).

Model state (a stateful `Model`: BatchNorm's statistics, see `models.Model`). Clients
start local training from the server's model state, update it at every step and send
their final state back, uncompressed. The server's new state is the mean of the
clients' states weighted by the aggregation weights (`execution.client_weights`: the
same weights the aggregator's mean uses), computed in float32 and cast back to each
variable's dtype (rounded for integers). It bypasses the compression aggregator and the
server optimizer: statistics are not a gradient and are small next to the parameters.
A round whose clients all have weight 0 keeps the state. A stateless model runs the
program it always ran (the choice is made in Python, nothing is added to it).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_compress.aggregators import Aggregator, Clients
from fedjax_compress.aggregators.broadcast import Broadcast
from fedjax_compress.learning import execution
from fedjax_compress.learning.client import ClientOutput, GlobalModel
from fedjax_compress.streams import BROADCAST_STREAM


class ServerState(NamedTuple):
  """The server's state: model, optimizer and aggregator states, the round, the
  client-state table (one row per client id, for aggregators with per-client state such
  as error feedback; () otherwise) and the model state (a stateful model's, e.g.
  BatchNorm's statistics; () for a stateless model). Fields that are () are left out of
  checkpoints, so checkpoints from before a field existed stay readable."""

  params: Any
  opt_state: Any
  aggregator_state: Any
  round: jax.Array
  client_states: Any = ()
  model_state: Any = ()


class RoundSetup(NamedTuple):
  """What every round is built from; static (closed over, never traced)."""

  aggregator: Aggregator
  server_optimizer: optax.GradientTransformation
  broadcast: Broadcast
  spec: Any  # the parameters' shapes and dtypes
  metrics_spec: Any  # the clients' metric sums, shapes and dtypes
  state_spec: Any  # a stateful model's state, shapes and dtypes; () if stateless
  uniform: bool  # clients weigh 1 each, not by examples trained on
  has_client_states: bool  # the aggregator keeps a table of per-client state
  has_model_state: bool  # the model is stateful


class RoundContext(NamedTuple):
  """Read-only while clients are folded: the aggregator's state, the server's key."""

  aggregator_state: Any
  server_key: jax.Array


class RoundResults(NamedTuple):
  """A round's running results, folded client by client or chunk by chunk."""

  partial: Any  # the aggregator's partial result
  metrics: dict[str, jax.Array]  # sums of the clients' metric sums
  table: Any  # the client-state table, rows of finished clients updated
  rows: jax.Array  # int32 [clients]: each client's row of the table
  # A stateful model's (float32 sum of weight * client state, float32 sum of weights).
  state_sums: Any = ()


class RoundStart(NamedTuple):
  """What `begin` hands the clients and the runner."""

  received: Any  # the model as clients decode it (a `GlobalModel` if stateful)
  broadcast_bits: jax.Array  # bits of the broadcast model, per client
  client_keys: jax.Array  # [clients] keys
  results: RoundResults  # empty
  context: RoundContext


def init_state(
  setup: RoundSetup,
  model_init: Callable,
  model_init_state: Callable | None,
  num_table_rows: int,
  key: jax.Array,
) -> ServerState:
  """The server's first state: the model's, the optimizer's and the aggregator's."""
  params = model_init(key)
  table = ()
  if setup.has_client_states:
    assert setup.aggregator.client_init is not None  # has_client_states says it is set
    row = setup.aggregator.client_init(params)
    table = jax.tree.map(lambda r: jnp.zeros((num_table_rows,) + r.shape, r.dtype), row)
  model_state = ()
  if setup.has_model_state:
    assert model_init_state is not None  # a stateful model's init_state
    model_state = model_init_state(key)
  return ServerState(
    params,
    setup.server_optimizer.init(params),
    setup.aggregator.init(params),
    jnp.zeros((), jnp.int32),
    table,
    model_state,
  )


def begin(
  setup: RoundSetup, state: ServerState, rows: jax.Array, key: jax.Array, num_clients: int
) -> RoundStart:
  """Broadcast, per-client keys and the round's empty results."""
  client_root, server_key = jax.random.split(key)
  received, broadcast_bits = setup.broadcast.send(
    state.params, jax.random.fold_in(key, BROADCAST_STREAM)
  )
  # A copy, so that the round can update the table in place (donated buffers).
  table = jax.tree.map(jnp.copy, state.client_states)
  results = RoundResults(
    setup.aggregator.start(state.aggregator_state, setup.spec, num_clients),
    jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), setup.metrics_spec),
    table,
    rows,
  )
  if setup.has_model_state:
    received = GlobalModel(received, state.model_state)
    results = results._replace(
      state_sums=(
        jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), setup.state_spec),
        jnp.zeros((), jnp.float32),
      )
    )
  return RoundStart(
    received,
    broadcast_bits,
    jax.random.split(client_root, num_clients),
    results,
    RoundContext(state.aggregator_state, server_key),
  )


def fold(
  setup: RoundSetup,
  results: RoundResults,
  context: RoundContext,
  outputs: ClientOutput,
  index: jax.Array,
) -> RoundResults:
  """Folds the clients at cohort positions `index` (`outputs`' leading axis) into the
  round's results."""
  rows = results.rows[index]
  stateful = setup.has_client_states
  states = jax.tree.map(lambda t: t[rows], results.table) if stateful else ()
  weights = execution.client_weights(outputs, setup.uniform)
  partial, states = setup.aggregator.accumulate(
    context.aggregator_state,
    results.partial,
    outputs.delta,
    weights,
    Clients(index, states),
    context.server_key,
  )
  table = jax.tree.map(lambda t, s: t.at[rows].set(s), results.table, states) if stateful else ()
  metrics = jax.tree.map(lambda s, m: s + jnp.sum(m), results.metrics, outputs.metrics)
  state_sums = (
    add_weighted_states(results.state_sums, outputs.model_state, weights)
    if setup.has_model_state
    else ()
  )
  return RoundResults(partial, metrics, table, results.rows, state_sums)


def end(
  setup: RoundSetup,
  state: ServerState,
  results: RoundResults,
  context: RoundContext,
  broadcast_bits: jax.Array,
) -> tuple[ServerState, dict[str, jax.Array]]:
  """The aggregate, the server step and the round's metrics (device arrays)."""
  aggregate, aggregator_state, measurements = setup.aggregator.finish(
    context.aggregator_state, results.partial, setup.spec, context.server_key
  )
  pseudo_gradient = jax.tree.map(jnp.negative, aggregate)
  updates, opt_state = setup.server_optimizer.update(pseudo_gradient, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {**training_metrics(results.metrics), "broadcast_bits": broadcast_bits, **measurements}
  model_state = (
    weighted_mean_state(results.state_sums, state.model_state) if setup.has_model_state else ()
  )
  return ServerState(
    params, opt_state, aggregator_state, state.round + 1, results.table, model_state
  ), metrics


def whole_round(
  setup: RoundSetup,
  state: ServerState,
  rows: jax.Array,
  key: jax.Array,
  num_clients: int,
  train: Callable[[Any, jax.Array], ClientOutput],
):
  """One round as one traceable function; `train(received, client_keys) -> outputs` of
  every client at once."""
  start = begin(setup, state, rows, key, num_clients)
  outputs = train(start.received, start.client_keys)
  results = fold(
    setup, start.results, start.context, outputs, jnp.arange(num_clients, dtype=jnp.int32)
  )
  return end(setup, state, results, start.context, start.broadcast_bits)


def training_metrics(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The round's training metrics from the clients' summed metric sums."""
  return {
    "train/loss": sums["loss_sum"] / jnp.maximum(sums["count"], 1.0),
    "train/accuracy": sums["correct"] / jnp.maximum(sums["count"], 1.0),
    # Sequence tasks score tokens (`count`) and also count their examples.
    "train/num_examples": sums.get("num_examples", sums["count"]),
    **({"train/num_tokens": sums["count"]} if "num_examples" in sums else {}),
    "train/num_batches": sums["num_batches"],
  }


def add_weighted_states(sums, states, weights: jax.Array):
  """Adds `weight * state` of a chunk's clients (leading axis) to float32 running sums."""
  total, weight_sum = sums
  weights = weights.astype(jnp.float32)
  add = lambda t, s: t + jnp.tensordot(weights, s.astype(jnp.float32), axes=1)
  return jax.tree.map(add, total, states), weight_sum + jnp.sum(weights)


def weighted_mean_state(sums, old_state):
  """The weighted mean of the clients' states, in each variable's dtype; `old_state` if
  every client had weight 0."""
  total, weight_sum = sums

  def mean(t, old):
    value = t / jnp.where(weight_sum > 0, weight_sum, 1.0)
    if not jnp.issubdtype(old.dtype, jnp.floating):
      value = jnp.round(value)
    return jnp.where(weight_sum > 0, value.astype(old.dtype), old)

  return jax.tree.map(mean, total, old_state)
