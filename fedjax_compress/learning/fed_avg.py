"""Federated averaging as a process: `init(key) -> state`, `next(state, batch, key)`.

The server treats `-aggregate(deltas)` as a pseudo-gradient for any optax optimizer, so
FedAvg (SGD, lr 1), FedAvgM (momentum), FedAdam and FedYogi are configurations.
FedProx is `proximal_mu > 0`, FedSGD is `fed_sgd=True`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_compress.aggregators import (Aggregator, BIT_KEYS, DOWNLINK_AUX_BITS, UPLINK_AUX_BITS,
                                         UPLINK_BITS, mean, payload_bits)
from fedjax_compress.aggregators.core import bit_measurements, check_accounting
from fedjax_compress.data.pipeline import RoundBatch
from fedjax_compress.learning import execution, sharding
from fedjax_compress.learning.client import ClientOutput, gradient, local_sgd
from fedjax_compress.models import Model

WEIGHTINGS = ("num_examples", "uniform")
# What TFF's clients report for the tutorial's Keras metrics: accuracy and loss as
# (total, count) float32 pairs, num_examples and num_batches as int64.
TFF_METRIC_BITS = 4 * 32 + 2 * 64


class ServerState(NamedTuple):
  """The server's state: model, optimizer and aggregator states, and the round."""
  params: Any
  opt_state: Any
  aggregator_state: Any
  round: jax.Array


class Process(NamedTuple):
  """`init(key) -> ServerState`; `next(state, batch, key) -> (state, metrics)`.

  `metrics` maps names to Python floats and ints; bit counts are exact ints:
  `round_update_bits` (the encoded model updates), `round_aggregated_bits` (all that
  clients send: updates, weights, quantile records, metrics) and
  `round_broadcasted_bits` (the model and the aggregator's norms sent to clients).
  """
  init: Callable[[jax.Array], ServerState]
  next: Callable[[ServerState, RoundBatch, jax.Array], tuple[ServerState, dict[str, Any]]]
  strategy: str


def fed_avg(model: Model, client_optimizer: optax.GradientTransformation,
            server_optimizer: optax.GradientTransformation, *,
            aggregator: Aggregator | None = None, client_weighting: str = "num_examples",
            proximal_mu: float = 0.0, fed_sgd: bool = False, strategy: str = "auto",
            chunk_size: int = 8, bit_accounting: str = "exact") -> Process:
  """Builds FedAvg and its relatives.

  Args:
    model: the model to train.
    client_optimizer: local optimizer (ignored with `fed_sgd`).
    server_optimizer: applied to `-aggregate` as a gradient.
    aggregator: combines client deltas; default: weighted float32 mean, which the
      `sequential` and `chunked` strategies compute from running sums (memory grows
      with the chunk, not the cohort). Other aggregators take all deltas stacked.
    client_weighting: "num_examples" (examples trained on) or "uniform".
    proximal_mu: FedProx's proximal coefficient.
    fed_sgd: clients send their full-batch gradient instead of training.
    strategy: "auto", "vmap", "chunked", "sequential" or "sharded" (see `execution`).
    chunk_size: clients per chunk for "chunked".
    bit_accounting: "exact" counts the arrays our clients send; "tff" counts the
      training metrics as TFF's Keras metrics (build the aggregator with the same mode).
  """
  if client_weighting not in WEIGHTINGS:
    raise ValueError(f"client_weighting={client_weighting!r}; valid: {WEIGHTINGS}.")
  if proximal_mu < 0:
    raise ValueError(f"proximal_mu={proximal_mu} must be >= 0.")
  # The default mean is streamed under split strategies: clients are summed as they
  # finish, so memory grows with the chunk, not the cohort (same numbers and bits).
  default_mean = aggregator is None
  aggregator = aggregator or mean()
  trainer = gradient(model) if fed_sgd else local_sgd(model, client_optimizer,
                                                      proximal_mu=proximal_mu)
  strategy = execution.resolve(strategy)
  streamed = default_mean and strategy in ("sequential", "chunked")
  check_accounting(bit_accounting)

  template = jax.eval_shape(model.init, jax.random.key(0))
  model_bits = payload_bits(template)
  metrics_payload_bits = payload_bits(jax.eval_shape(
      lambda p: trainer.init(p), template)[-1])

  def init(key):
    params = model.init(key)
    return ServerState(params, server_optimizer.init(params), aggregator.init(params),
                       jnp.zeros((), jnp.int32))

  def apply_aggregate(state, aggregate, agg_state, measurements, metric_sums):
    pseudo_gradient = jax.tree.map(jnp.negative, aggregate)
    updates, opt_state = server_optimizer.update(pseudo_gradient, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "train/loss": metric_sums["loss_sum"] / jnp.maximum(metric_sums["count"], 1.0),
        "train/accuracy": metric_sums["correct"] / jnp.maximum(metric_sums["count"], 1.0),
        "train/num_examples": metric_sums["count"],
        "train/num_batches": metric_sums["num_batches"],
        **measurements,
    }
    return ServerState(params, opt_state, agg_state, state.round + 1), metrics

  def server_update(state, outputs: ClientOutput, key):
    weights = execution.client_weights(outputs, client_weighting == "uniform")
    aggregate, agg_state, measurements = aggregator.apply(state.aggregator_state, outputs.delta,
                                                          weights, key)
    return apply_aggregate(state, aggregate, agg_state, measurements,
                           jax.tree.map(jnp.sum, outputs.metrics))

  def streamed_update(state, sums: execution.ClientSums, num_clients):
    """The default weighted float32 mean from running sums: what `mean()` computes."""
    safe = jnp.where(sums.weight > 0, sums.weight, 1.0)
    aggregate = jax.tree.map(lambda t: t / safe, sums.weighted_delta)
    measurements = bit_measurements(num_clients, uplink_bits=model_bits, uplink_aux_bits=32)
    return apply_aggregate(state, aggregate, state.aggregator_state, measurements, sums.metrics)

  def split_keys(key, num_clients):
    client_root, server_key = jax.random.split(key)
    return jax.random.split(client_root, num_clients), server_key

  process_init = init
  if strategy == "vmap":
    @jax.jit
    def whole_round(state, x, y, mask, key):
      client_keys, server_key = split_keys(key, x.shape[0])
      outputs = execution.vmap_clients(trainer, state.params, x, y, mask, client_keys)
      return server_update(state, outputs, server_key)

    def run_round(state, batch, key):
      return whole_round(state, batch.x, batch.y, batch.mask, key)
  elif strategy == "sharded":
    mesh = sharding.client_mesh()
    run_round = sharding.sharded_round(trainer, server_update, split_keys, mesh)
    # The state lives replicated on the mesh, readable in every process.
    process_init = lambda key: sharding.replicate(init(key), mesh)
  elif streamed:
    runner = execution.client_runner(trainer, strategy, chunk_size, client_weighting)
    finish = jax.jit(streamed_update, static_argnums=2)
    keys_for = jax.jit(split_keys, static_argnums=1)

    def run_round(state, batch, key):
      client_keys, _ = keys_for(key, batch.num_clients)
      sums = runner(state.params, batch.x, batch.y, batch.mask, client_keys)
      return finish(state, sums, batch.num_clients)
  else:
    runner = execution.client_runner(trainer, strategy, chunk_size)
    finish = jax.jit(server_update)
    keys_for = jax.jit(split_keys, static_argnums=1)

    def run_round(state, batch, key):
      client_keys, server_key = keys_for(key, batch.num_clients)
      outputs = runner(state.params, batch.x, batch.y, batch.mask, client_keys)
      return finish(state, outputs, server_key)

  def next_round(state, batch: RoundBatch, key):
    state, metrics = run_round(state, batch, key)
    metrics = jax.device_get(metrics)
    bits = {k: int(np.asarray(metrics.pop(k), np.int64).sum()) for k in BIT_KEYS}
    out = {k: float(v) if np.ndim(v) == 0 else np.asarray(v) for k, v in metrics.items()}
    out["train/num_examples"] = int(out["train/num_examples"])
    out["train/num_batches"] = int(out["train/num_batches"])
    clients = batch.num_clients
    metric_bits = TFF_METRIC_BITS if bit_accounting == "tff" else metrics_payload_bits
    out["round_update_bits"] = bits[UPLINK_BITS]
    out["round_aggregated_bits"] = bits[UPLINK_BITS] + bits[UPLINK_AUX_BITS] + metric_bits * clients
    out["round_broadcasted_bits"] = model_bits * clients + bits[DOWNLINK_AUX_BITS]
    return state, out

  return Process(process_init, next_round, strategy)
