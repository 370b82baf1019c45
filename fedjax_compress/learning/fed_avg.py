"""Federated averaging as a process: `init(key) -> state`, `next(state, batch, key)`.

The server treats `-aggregate(deltas)` as a pseudo-gradient for any optax optimizer, so
FedAvg (SGD, lr 1), FedAvgM (momentum), FedAdam and FedYogi are configurations.
FedProx is `proximal_mu > 0`, FedSGD is `fed_sgd=True`.

Model state (a stateful `Model`: BatchNorm's statistics, see `models.Model`). Clients
start local training from the server's model state, update it at every step and send
their final state back, uncompressed. The server's new state is the mean of the
clients' states weighted by the aggregation weights (`execution.client_weights`: the
same weights the aggregator's mean uses), computed in float32 and cast back to each
variable's dtype (rounded for integers). It bypasses the compression aggregator and the
server optimizer: statistics are not a gradient and are small next to the parameters.
A round whose clients all have weight 0 keeps the state. Each client sends its state
and receives the server's, so `payload_bits(state)` per client is added to both
`round_aggregated_bits` and `round_broadcasted_bits`. A stateless model runs the
program it always ran (the choice is made in Python, nothing is added to it).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_compress.aggregators import (Aggregator, BIT_KEYS, DOWNLINK_AUX_BITS, UPLINK_AUX_BITS,
                                         UPLINK_BITS, mean, payload_bits)
from fedjax_compress.aggregators.broadcast import Broadcast, float32_broadcast
from fedjax_compress.aggregators.core import Clients, check_accounting
from fedjax_compress.data.pipeline import RoundBatch
from fedjax_compress.learning import execution, sharding
from fedjax_compress.learning.client import ClientOutput, GlobalModel, gradient, local_sgd
from fedjax_compress.models import Model, is_stateful

WEIGHTINGS = ("num_examples", "uniform")
# What TFF's clients report for the tutorial's Keras metrics: accuracy and loss as
# (total, count) float32 pairs, num_examples and num_batches as int64.
TFF_METRIC_BITS = 4 * 32 + 2 * 64


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


class Process(NamedTuple):
  """`init(key) -> ServerState`; `next(state, batch, key) -> (state, metrics)`.

  `metrics` maps names to Python floats and ints; bit counts are exact ints:
  `round_update_bits` (the encoded model updates), `round_aggregated_bits` (all that
  clients send: updates, weights, quantile records, metrics) and
  `round_broadcasted_bits` (the model as broadcast, and the aggregator's norms, to the
  round's clients). A stateful model's state counts in both directions, uncompressed.
  """
  init: Callable[[jax.Array], ServerState]
  next: Callable[[ServerState, RoundBatch, jax.Array], tuple[ServerState, dict[str, Any]]]
  strategy: str


class RoundResults(NamedTuple):
  """A round's running results, folded client by client or chunk by chunk."""
  partial: Any  # the aggregator's partial result
  metrics: dict[str, jax.Array]  # sums of the clients' metric sums
  table: Any  # the client-state table, rows of finished clients updated
  rows: jax.Array  # int32 [clients]: each client's row of the table
  # A stateful model's (float32 sum of weight * client state, float32 sum of weights).
  state_sums: Any = ()


def check_bit_measurements(aggregator: Aggregator, spec: Any) -> None:
  """Raises `ValueError` if `aggregator.finish`'s measurements lack a key of `BIT_KEYS`.

  Traced only (`jax.eval_shape` of init, start and finish on the parameter spec), so
  nothing runs; `fed_avg` calls it when it builds a process, instead of failing after
  the first round. An aggregator that cannot be traced on a spec (its `init` reads
  values) is checked at its first round instead.
  """
  def measurements(params, key):
    state = aggregator.init(params)
    return aggregator.finish(state, aggregator.start(state, spec, 1), spec, key)[2]

  try:
    measured = jax.eval_shape(measurements, spec, jax.eval_shape(jax.random.key, 0))
  except Exception:  # pylint: disable=broad-except  # not traceable here: its first round checks
    return
  _check_bit_keys(measured)


def output_width(model: Model) -> int:
  """The number of logits the model computes for one example (traced, nothing runs)."""
  x = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)
  key = jax.eval_shape(jax.random.key, 0)
  if is_stateful(model):
    apply = lambda k, x: model.apply_with_state(model.init(k), model.init_state(k), x)[0]
  else:
    apply = lambda k, x: model.apply(model.init(k), x)
  return int(jax.eval_shape(apply, key, x).shape[-1])


def check_labels(batch: RoundBatch, num_outputs: int) -> None:
  """Raises `ValueError` if a label of the batch's examples does not index the logits.

  Cross-entropy of an out-of-range label is NaN or garbage, not an error: a 5-class
  model on 10-class data would train on and log NaN.
  """
  labels = np.asarray(batch.y)[np.asarray(batch.mask, bool)]
  if labels.size and (labels.min() < 0 or labels.max() >= num_outputs):
    raise ValueError(f"The round's labels span {labels.min()}..{labels.max()} but the model "
                     f"has {num_outputs} outputs: build the model with num_classes="
                     f"{max(int(labels.max()) + 1, num_outputs)} (the data's number of "
                     f"classes).")


def _check_bit_keys(measurements: Any) -> None:
  keys = set(measurements) if isinstance(measurements, Mapping) else set()
  missing = [k for k in BIT_KEYS if k not in keys]
  if missing:
    raise ValueError(
        f"The aggregator's finish returns measurements without {', '.join(missing)}: "
        f"fed_avg counts the bits clients send from {', '.join(BIT_KEYS)} (int32 "
        f"[num_clients] each). Add them to the measurements with "
        f"fedjax_compress.aggregators.core.bit_measurements(num_clients, uplink_bits=..., "
        f"uplink_aux_bits=..., downlink_aux_bits=...) (also aggregators.bit_measurements); "
        f"keys left out count 0 bits.")


def _is_positive_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def fed_avg(model: Model, client_optimizer: optax.GradientTransformation,
            server_optimizer: optax.GradientTransformation, *,
            aggregator: Aggregator | None = None, client_weighting: str = "num_examples",
            proximal_mu: float = 0.0, fed_sgd: bool = False, strategy: str = "auto",
            chunk_size: int = 8, bit_accounting: str = "exact",
            client_ids: Sequence[str] | None = None,
            broadcast: Broadcast | None = None, client_threads: int = 2,
            memory_budget_bytes: int | None = None) -> Process:
  """Builds FedAvg and its relatives.

  Args:
    model: the model to train; a stateful model's state is averaged, not aggregated
      (see the module docstring).
    client_optimizer: local optimizer (ignored with `fed_sgd`).
    server_optimizer: applied to `-aggregate` as a gradient.
    aggregator: combines client deltas; default: the weighted float32 `mean`. Its
      `finish` must report `BIT_KEYS` (checked here, see `check_bit_measurements`).
      Under the `sequential` and `chunked` strategies every aggregator is streamed
      (memory grows with the chunk, not the cohort).
    client_weighting: "num_examples" (examples trained on) or "uniform".
    proximal_mu: FedProx's proximal coefficient.
    fed_sgd: clients send their full-batch gradient instead of training.
    strategy: "auto", "vmap", "chunked", "sequential" or "sharded" (see `execution`).
    chunk_size: clients per chunk for "chunked" ("auto" on one GPU/TPU picks its own:
      `execution.AUTO_CHUNK_SIZE`, or the whole cohort when it is smaller).
    bit_accounting: "exact" counts the arrays our clients send; "tff" counts the
      training metrics as TFF's Keras metrics (build the aggregator with the same mode).
    client_ids: every client id a round may sample; needed (and only used) when the
      aggregator keeps per-client state: the table has one row per id.
    broadcast: how the model reaches clients (default: float32); clients train from the
      model as decoded and return deltas relative to it.
    client_threads: clients that "sequential" trains at once, on host threads (the
      same results for any value; 2 was 1.5x faster than 1 on a 2-core CPU).
    memory_budget_bytes: device memory a round's program may take: "chunked" halves a
      chunk until its program fits; "vmap" raises `MemoryError` for a cohort that does
      not fit. None: 90% of the device's free memory where the backend reports it
      (GPU/TPU), no limit on CPU.
  """
  if client_weighting not in WEIGHTINGS:
    raise ValueError(f"client_weighting={client_weighting!r}; valid: {WEIGHTINGS}.")
  if proximal_mu < 0:
    raise ValueError(f"proximal_mu={proximal_mu} must be >= 0.")
  aggregator = aggregator or mean()
  broadcast = broadcast or float32_broadcast()
  stateful = aggregator.client_init is not None
  if stateful and not client_ids:
    raise ValueError("This aggregator keeps state per client (e.g. error feedback): pass "
                     "client_ids=train_data.client_ids to fed_avg.")
  row_of = {cid: i for i, cid in enumerate(client_ids or ())}
  if client_ids and len(row_of) != len(client_ids):
    raise ValueError("client_ids has duplicate ids: give each client of the dataset once.")
  if client_threads < 1:
    raise ValueError(f"client_threads={client_threads} must be >= 1.")
  trainer = gradient(model) if fed_sgd else local_sgd(model, client_optimizer,
                                                      proximal_mu=proximal_mu)
  if not _is_positive_int(chunk_size):
    raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1.")
  if memory_budget_bytes is not None and not _is_positive_int(memory_budget_bytes):
    raise ValueError(f"memory_budget_bytes={memory_budget_bytes!r} must be an int >= 1, or "
                     f"None for 90% of the device's free memory.")
  chunk_size = execution.resolve_chunk_size(strategy, chunk_size)
  strategy = execution.resolve(strategy)
  check_accounting(bit_accounting)
  uniform = client_weighting == "uniform"
  has_state = is_stateful(model)

  spec = jax.eval_shape(model.init, jax.random.key(0))
  check_bit_measurements(aggregator, spec)
  num_outputs = output_width(model)
  state_spec = jax.eval_shape(model.init_state, jax.random.key(0)) if has_state else ()
  start_spec = GlobalModel(spec, state_spec) if has_state else spec
  metrics_spec = jax.eval_shape(trainer.init, start_spec)[-1]
  metrics_payload_bits = payload_bits(metrics_spec)
  model_state_bits = payload_bits(state_spec)

  def init(key):
    params = model.init(key)
    table = ()
    if stateful:
      row = aggregator.client_init(params)
      table = jax.tree.map(lambda r: jnp.zeros((len(row_of),) + r.shape, r.dtype), row)
    model_state = model.init_state(key) if has_state else ()
    return ServerState(params, server_optimizer.init(params), aggregator.init(params),
                       jnp.zeros((), jnp.int32), table, model_state)

  def begin(state, rows, key, num_clients):
    """Broadcast, per-client keys and the round's empty results."""
    client_root, server_key = jax.random.split(key)
    received, broadcast_bits = broadcast.send(state.params, jax.random.fold_in(key, 0xB0))
    # A copy, so that the round can update the table in place (donated buffers).
    table = jax.tree.map(jnp.copy, state.client_states)
    results = RoundResults(aggregator.start(state.aggregator_state, spec, num_clients),
                           jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics_spec),
                           table, rows)
    if has_state:
      received = GlobalModel(received, state.model_state)
      results = results._replace(state_sums=(
          jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), state_spec),
          jnp.zeros((), jnp.float32)))
    context = (state.aggregator_state, server_key)
    return received, broadcast_bits, jax.random.split(client_root, num_clients), results, context

  def add(results: RoundResults, context, outputs: ClientOutput, index):
    """Folds clients at cohort positions `index` into the round's results."""
    aggregator_state, server_key = context
    rows = results.rows[index]
    states = jax.tree.map(lambda t: t[rows], results.table) if stateful else ()
    weights = execution.client_weights(outputs, uniform)
    partial, states = aggregator.accumulate(
        aggregator_state, results.partial, outputs.delta, weights, Clients(index, states),
        server_key)
    table = (jax.tree.map(lambda t, s: t.at[rows].set(s), results.table, states) if stateful
             else ())
    metrics = jax.tree.map(lambda s, m: s + jnp.sum(m), results.metrics, outputs.metrics)
    state_sums = (_add_weighted_states(results.state_sums, outputs.model_state, weights)
                  if has_state else ())
    return RoundResults(partial, metrics, table, results.rows, state_sums)

  def end(state, results: RoundResults, context, broadcast_bits):
    """The aggregate, the server step and the round's metrics."""
    aggregator_state, server_key = context
    aggregate, aggregator_state, measurements = aggregator.finish(
        aggregator_state, results.partial, spec, server_key)
    pseudo_gradient = jax.tree.map(jnp.negative, aggregate)
    updates, opt_state = server_optimizer.update(pseudo_gradient, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    sums = results.metrics
    metrics = {
        "train/loss": sums["loss_sum"] / jnp.maximum(sums["count"], 1.0),
        "train/accuracy": sums["correct"] / jnp.maximum(sums["count"], 1.0),
        # Sequence tasks score tokens (`count`) and also count their examples.
        "train/num_examples": sums.get("num_examples", sums["count"]),
        **({"train/num_tokens": sums["count"]} if "num_examples" in sums else {}),
        "train/num_batches": sums["num_batches"],
        "broadcast_bits": broadcast_bits,
        **measurements,
    }
    model_state = (_weighted_mean_state(results.state_sums, state.model_state) if has_state
                   else ())
    return ServerState(params, opt_state, aggregator_state, state.round + 1,
                       results.table, model_state), metrics

  def whole_round(state, rows, key, num_clients, train):
    """One round as one traceable function; `train(received, client_keys) -> outputs`."""
    received, broadcast_bits, client_keys, results, context = begin(state, rows, key,
                                                                    num_clients)
    outputs = train(received, client_keys)
    results = add(results, context, outputs, jnp.arange(num_clients, dtype=jnp.int32))
    return end(state, results, context, broadcast_bits)

  memory_budget = (execution.device_memory_budget() if memory_budget_bytes is None
                   else memory_budget_bytes)
  process_init = init
  if strategy == "vmap":
    @jax.jit
    def vmap_round(state, rows, key, x, y, mask):
      train = lambda received, keys: execution.vmap_clients(trainer, received, x, y, mask, keys)
      return whole_round(state, rows, key, x.shape[0], train)

    checked_shapes = set()

    def run_round(state, batch, rows, key):
      args = (state, rows, key, batch.x, batch.y, batch.mask)
      if memory_budget is not None and batch.x.shape not in checked_shapes:
        need = execution.program_bytes(vmap_round, *args)
        if need > memory_budget:
          raise MemoryError(
              f"A vmap round of {batch.num_clients} clients needs {need / 2**20:.1f} MiB of "
              f"device memory, over the budget of {memory_budget / 2**20:.1f} MiB: use "
              f"strategy='chunked' (or 'auto'), or fewer clients per round.")
        checked_shapes.add(batch.x.shape)
      return vmap_round(*args)
  elif strategy == "sharded":
    mesh = sharding.client_mesh()
    run_round = sharding.sharded_round(trainer, whole_round, mesh)
    # The state lives replicated on the mesh, readable in every process.
    process_init = lambda key: sharding.replicate(init(key), mesh)
  else:
    runner = execution.client_runner(trainer, strategy, add, chunk_size, client_threads,
                                     memory_budget)
    begin_round = jax.jit(begin, static_argnums=3)
    end_round = jax.jit(end)

    def run_round(state, batch, rows, key):
      received, broadcast_bits, client_keys, results, context = begin_round(
          state, rows, key, batch.num_clients)
      results = runner(results, context, received, batch.x, batch.y, batch.mask, client_keys)
      return end_round(state, results, context, broadcast_bits)

  def table_rows(batch: RoundBatch) -> np.ndarray:
    if not stateful:
      return np.zeros(batch.num_clients, np.int32)
    unknown = [c for c in batch.client_ids if c not in row_of]
    if unknown or len(batch.client_ids) != batch.num_clients:
      raise ValueError(f"Clients {unknown[:5] or '(unnamed)'} are not in fed_avg's "
                       f"client_ids: a stateful aggregator needs every client's id.")
    return np.asarray([row_of[c] for c in batch.client_ids], np.int32)

  def next_round(state, batch: RoundBatch, key):
    check_labels(batch, num_outputs)
    state, metrics = run_round(state, batch, table_rows(batch), key)
    metrics = jax.device_get(metrics)
    _check_bit_keys(metrics)
    bits = {k: int(np.asarray(metrics.pop(k), np.int64).sum()) for k in BIT_KEYS}
    broadcast_bits = int(metrics.pop("broadcast_bits"))
    out = {k: float(v) if np.ndim(v) == 0 else np.asarray(v) for k, v in metrics.items()}
    out["train/num_examples"] = int(out["train/num_examples"])
    if "train/num_tokens" in out:
      out["train/num_tokens"] = int(out["train/num_tokens"])
    out["train/num_batches"] = int(out["train/num_batches"])
    clients = batch.num_clients
    metric_bits = TFF_METRIC_BITS if bit_accounting == "tff" else metrics_payload_bits
    out["round_update_bits"] = bits[UPLINK_BITS]
    out["round_aggregated_bits"] = (bits[UPLINK_BITS] + bits[UPLINK_AUX_BITS]
                                    + (metric_bits + model_state_bits) * clients)
    out["round_broadcasted_bits"] = ((broadcast_bits + model_state_bits) * clients
                                     + bits[DOWNLINK_AUX_BITS])
    return state, out

  return Process(process_init, next_round, strategy)


def _add_weighted_states(sums, states, weights: jax.Array):
  """Adds `weight * state` of a chunk's clients (leading axis) to float32 running sums."""
  total, weight_sum = sums
  weights = weights.astype(jnp.float32)
  add = lambda t, s: t + jnp.tensordot(weights, s.astype(jnp.float32), axes=1)
  return jax.tree.map(add, total, states), weight_sum + jnp.sum(weights)


def _weighted_mean_state(sums, old_state):
  """The weighted mean of the clients' states, in each variable's dtype; `old_state` if
  every client had weight 0."""
  total, weight_sum = sums

  def mean(t, old):
    value = t / jnp.where(weight_sum > 0, weight_sum, 1.0)
    if not jnp.issubdtype(old.dtype, jnp.floating):
      value = jnp.round(value)
    return jnp.where(weight_sum > 0, value.astype(old.dtype), old)

  return jax.tree.map(mean, total, old_state)
