"""Client work: local training over masked batches, as init / step / finalize.

A strategy (see `execution`) decides how steps are run; the arithmetic lives here, so
every strategy computes the same thing. A batch whose mask is all False leaves the
client state unchanged, optimizer state included.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_compress.models import Model, masked_loss, masked_metric_sums

METRIC_KEYS = ("loss_sum", "correct", "count", "num_batches")


class ClientOutput(NamedTuple):
  """What a client hands to the aggregator: its update, its weight, its metric sums."""
  delta: Any
  num_examples: jax.Array
  metrics: dict[str, jax.Array]


class ClientTrainer(NamedTuple):
  """Local work as three pure functions.

  init(global_params) -> carry; step(carry, global_params, x, y, mask, key) -> carry;
  finalize(carry, global_params) -> ClientOutput.
  """
  init: Callable
  step: Callable
  finalize: Callable


def _zero_metrics():
  return {k: jnp.zeros((), jnp.float32) for k in METRIC_KEYS}


def _add_metrics(total, logits, y, mask):
  sums = masked_metric_sums(logits, y, mask)
  sums["num_batches"] = jnp.any(mask).astype(jnp.float32)
  return {k: total[k] + sums[k] for k in METRIC_KEYS}


def local_sgd(model: Model, optimizer: optax.GradientTransformation, *,
              proximal_mu: float = 0.0) -> ClientTrainer:
  """FedAvg's client (FedProx's with `proximal_mu > 0`): optimizer steps on local batches.

  The delta is `local params - global params`. Metrics are those of the forward pass
  of each step, as TFF reports them.
  """

  def init(global_params):
    return global_params, optimizer.init(global_params), _zero_metrics()

  def step(carry, global_params, x, y, mask, key):
    params, opt_state, metrics = carry

    def loss_fn(p):
      logits = model.apply(p, x, train=True, rng=key)
      loss = masked_loss(logits, y, mask)
      if proximal_mu:
        sq = sum(jnp.sum((a - b)**2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(global_params)))
        loss = loss + 0.5 * proximal_mu * sq
      return loss, logits

    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    active = jnp.any(mask)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
    return keep(new_params, params), keep(new_opt_state, opt_state), _add_metrics(metrics, logits, y, mask)

  def finalize(carry, global_params):
    params, _, metrics = carry
    delta = jax.tree.map(jnp.subtract, params, global_params)
    return ClientOutput(delta, metrics["count"], metrics)

  return ClientTrainer(init, step, finalize)


def gradient(model: Model) -> ClientTrainer:
  """FedSGD's client: the gradient over all local examples, sent as delta = -gradient.

  With a server SGD optimizer of rate eta the global step is then `-eta * mean gradient`.
  """

  def init(global_params):
    return jax.tree.map(jnp.zeros_like, global_params), _zero_metrics()

  def step(carry, global_params, x, y, mask, key):
    grad_sum, metrics = carry

    def loss_sum(p):
      logits = model.apply(p, x, train=True, rng=key)
      return masked_loss(logits, y, mask) * jnp.sum(mask), logits

    (_, logits), grads = jax.value_and_grad(loss_sum, has_aux=True)(global_params)
    return jax.tree.map(jnp.add, grad_sum, grads), _add_metrics(metrics, logits, y, mask)

  def finalize(carry, global_params):
    grad_sum, metrics = carry
    count = jnp.maximum(metrics["count"], 1.0)
    return ClientOutput(jax.tree.map(lambda g: -g / count, grad_sum), metrics["count"], metrics)

  return ClientTrainer(init, step, finalize)
