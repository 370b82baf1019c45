"""Federated averaging as a process: `init(key) -> state`, `next(state, batch, key)`.

The server treats `-aggregate(deltas)` as a pseudo-gradient for any optax optimizer, so
FedAvg (SGD, lr 1), FedAvgM (momentum), FedAdam and FedYogi are configurations.
FedProx is `proximal_mu > 0`, FedSGD is `fed_sgd=True`.

`fed_avg` checks its arguments, builds the round's pure functions (`rounds`) and the
strategy's runner (`runners`) and wires them into a `Process`; `next` turns the round's
device metrics into Python numbers and exact bit counts (`round_metrics`). A stateful
model's state travels uncompressed: each client sends its state and receives the
server's, so `payload_bits(state)` per client is added to both `round_aggregated_bits`
and `round_broadcasted_bits` (see `rounds` for how the server averages it).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_compress.aggregators import (
  Aggregator,
  BIT_KEYS,
  DOWNLINK_AUX_BITS,
  UPLINK_AUX_BITS,
  UPLINK_BITS,
  float32_mean,
  payload_bits,
)
from fedjax_compress.aggregators.broadcast import Broadcast, float32_broadcast
from fedjax_compress.aggregators.base import check_accounting
from fedjax_compress.data.pipeline import RoundBatch
from fedjax_compress.learning import execution, sharding
from fedjax_compress.learning.client import ClientTrainer, GlobalModel, gradient, local_sgd
from fedjax_compress.learning.rounds import RoundSetup, ServerState, init_state
from fedjax_compress.learning.runners import round_runner
from fedjax_compress.models import Model, is_stateful

WEIGHTINGS = ("num_examples", "uniform")
# What TFF's clients report for the tutorial's Keras metrics: accuracy and loss as
# (total, count) float32 pairs, num_examples and num_batches as int64.
TFF_METRIC_BITS = 4 * 32 + 2 * 64


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


class PayloadBits(NamedTuple):
  """Bits per client that travel outside the aggregator and the broadcast."""

  metrics: int  # the training metrics each client reports
  model_state: int  # a stateful model's state, each way; 0 if stateless


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
    raise ValueError(
      f"The round's labels span {labels.min()}..{labels.max()} but the model "
      f"has {num_outputs} outputs: build the model with num_classes="
      f"{max(int(labels.max()) + 1, num_outputs)} (the data's number of "
      f"classes)."
    )


def _check_bit_keys(measurements: Any) -> None:
  keys = set(measurements) if isinstance(measurements, Mapping) else set()
  missing = [k for k in BIT_KEYS if k not in keys]
  if missing:
    raise ValueError(
      f"The aggregator's finish returns measurements without {', '.join(missing)}: "
      f"fed_avg counts the bits clients send from {', '.join(BIT_KEYS)} (int32 "
      f"[num_clients] each). Add them to the measurements with "
      f"fedjax_compress.aggregators.base.bit_measurements(num_clients, uplink_bits=..., "
      f"uplink_aux_bits=..., downlink_aux_bits=...) (also aggregators.bit_measurements); "
      f"keys left out count 0 bits."
    )


def _is_positive_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def fed_avg(
  model: Model,
  client_optimizer: optax.GradientTransformation,
  server_optimizer: optax.GradientTransformation,
  *,
  aggregator: Aggregator | None = None,
  client_weighting: str = "num_examples",
  proximal_mu: float = 0.0,
  fed_sgd: bool = False,
  strategy: str = "auto",
  chunk_size: int = 8,
  bit_accounting: str = "exact",
  client_ids: Sequence[str] | None = None,
  broadcast: Broadcast | None = None,
  client_threads: int = 2,
  memory_budget_bytes: int | None = None,
) -> Process:
  """Builds FedAvg and its relatives.

  Args:
    model: the model to train; a stateful model's state is averaged, not aggregated
      (see the module docstring).
    client_optimizer: local optimizer (ignored with `fed_sgd`).
    server_optimizer: applied to `-aggregate` as a gradient.
    aggregator: combines client deltas; default: the weighted `float32_mean`. Its
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
      same results for any value; 2, the default, was faster than 1 on a 2-core CPU:
      `python -m benchmarks.round_speed --threads=1,2`, benchmarks/RESULTS.md).
    memory_budget_bytes: device memory a round's program may take: "chunked" halves a
      chunk until its program fits; "vmap" raises `MemoryError` for a cohort that does
      not fit. None: 90% of the device's free memory where the backend reports it
      (GPU/TPU), no limit on CPU.
  """
  aggregator = aggregator or float32_mean()
  check_arguments(
    aggregator,
    client_weighting=client_weighting,
    proximal_mu=proximal_mu,
    client_ids=client_ids,
    client_threads=client_threads,
    chunk_size=chunk_size,
    memory_budget_bytes=memory_budget_bytes,
    bit_accounting=bit_accounting,
  )
  chunk_size = execution.resolve_chunk_size(strategy, chunk_size)
  strategy = execution.resolve(strategy)
  trainer = (
    gradient(model) if fed_sgd else local_sgd(model, client_optimizer, proximal_mu=proximal_mu)
  )
  setup = round_setup(
    model,
    trainer,
    aggregator,
    server_optimizer,
    broadcast or float32_broadcast(),
    client_weighting == "uniform",
  )
  check_bit_measurements(aggregator, setup.spec)
  memory_budget = (
    execution.device_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
  )
  run_round = round_runner(
    setup,
    trainer,
    strategy,
    chunk_size=chunk_size,
    client_threads=client_threads,
    memory_budget=memory_budget,
  )
  row_of = {cid: i for i, cid in enumerate(client_ids or ())}
  init: Callable[..., ServerState]
  init = lambda key: init_state(setup, model.init, model.init_state, len(row_of), key)
  if strategy == "sharded":  # the state lives replicated on the mesh, readable everywhere
    init = lambda key, init=init: sharding.replicate(init(key), sharding.client_mesh())
  payload = PayloadBits(
    TFF_METRIC_BITS if bit_accounting == "tff" else payload_bits(setup.metrics_spec),
    payload_bits(setup.state_spec),
  )
  num_outputs = output_width(model)

  def next_round(state: ServerState, batch: RoundBatch, key: jax.Array):
    check_labels(batch, num_outputs)
    rows = table_rows(batch, row_of, setup.has_client_states)
    state, metrics = run_round(state, batch, rows, key)
    return state, round_metrics(jax.device_get(metrics), batch.num_clients, payload)

  return Process(init, next_round, strategy)


def check_arguments(
  aggregator: Aggregator,
  *,
  client_weighting: str,
  proximal_mu: float,
  client_ids: Sequence[str] | None,
  client_threads: int,
  chunk_size: int,
  memory_budget_bytes: int | None,
  bit_accounting: str,
) -> None:
  """Raises `ValueError` naming the first of `fed_avg`'s arguments that is invalid."""
  if client_weighting not in WEIGHTINGS:
    raise ValueError(f"client_weighting={client_weighting!r}; valid: {WEIGHTINGS}.")
  if proximal_mu < 0:
    raise ValueError(f"proximal_mu={proximal_mu} must be >= 0.")
  if aggregator.client_init is not None and not client_ids:
    raise ValueError(
      "This aggregator keeps state per client (e.g. error feedback): pass "
      "client_ids=train_data.client_ids to fed_avg."
    )
  if client_ids and len(set(client_ids)) != len(client_ids):
    raise ValueError("client_ids has duplicate ids: give each client of the dataset once.")
  if client_threads < 1:
    raise ValueError(f"client_threads={client_threads} must be >= 1.")
  if not _is_positive_int(chunk_size):
    raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1.")
  if memory_budget_bytes is not None and not _is_positive_int(memory_budget_bytes):
    raise ValueError(
      f"memory_budget_bytes={memory_budget_bytes!r} must be an int >= 1, or "
      f"None for 90% of the device's free memory."
    )
  check_accounting(bit_accounting)


def round_setup(
  model: Model,
  trainer: ClientTrainer,
  aggregator: Aggregator,
  server_optimizer: optax.GradientTransformation,
  broadcast: Broadcast,
  uniform: bool,
) -> RoundSetup:
  """The round's static parts, with the shapes of the model, its state and the clients'
  metrics (traced, nothing runs)."""
  has_state = is_stateful(model)
  spec = jax.eval_shape(model.init, jax.random.key(0))
  # has_state: init_state is set.
  state_spec = (
    jax.eval_shape(cast(Callable, model.init_state), jax.random.key(0)) if has_state else ()
  )
  start_spec = GlobalModel(spec, state_spec) if has_state else spec
  metrics_spec = jax.eval_shape(trainer.init, start_spec)[-1]
  return RoundSetup(
    aggregator,
    server_optimizer,
    broadcast,
    spec,
    metrics_spec,
    state_spec,
    uniform,
    aggregator.client_init is not None,
    has_state,
  )


def table_rows(batch: RoundBatch, row_of: Mapping[str, int], stateful: bool) -> np.ndarray:
  """Each client's row of the client-state table (zeros without a table)."""
  if not stateful:
    return np.zeros(batch.num_clients, np.int32)
  unknown = [c for c in batch.client_ids if c not in row_of]
  if unknown or len(batch.client_ids) != batch.num_clients:
    raise ValueError(
      f"Clients {unknown[:5] or '(unnamed)'} are not in fed_avg's "
      f"client_ids: a stateful aggregator needs every client's id."
    )
  return np.asarray([row_of[c] for c in batch.client_ids], np.int32)


def round_metrics(metrics: dict[str, Any], clients: int, payload: PayloadBits) -> dict[str, Any]:
  """A round's metrics as Python numbers, with its bits: exact ints summed over clients."""
  _check_bit_keys(metrics)
  bits = {k: int(np.asarray(metrics.pop(k), np.int64).sum()) for k in BIT_KEYS}
  broadcast_bits = int(metrics.pop("broadcast_bits"))
  out = {k: float(v) if np.ndim(v) == 0 else np.asarray(v) for k, v in metrics.items()}
  for count in ("train/num_examples", "train/num_tokens", "train/num_batches"):
    if count in out:
      out[count] = int(out[count])
  out["round_update_bits"] = bits[UPLINK_BITS]
  out["round_aggregated_bits"] = (
    bits[UPLINK_BITS] + bits[UPLINK_AUX_BITS] + (payload.metrics + payload.model_state) * clients
  )
  out["round_broadcasted_bits"] = (broadcast_bits + payload.model_state) * clients + bits[
    DOWNLINK_AUX_BITS
  ]
  return out
