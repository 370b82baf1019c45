"""Client work: local training over masked batches, as init / step / finalize.

A strategy (see `execution`) decides how steps are run; the arithmetic lives here, so
every strategy computes the same thing. A batch whose mask is all False leaves the
client state unchanged, optimizer state and model state included.

The loss and the metric sums are the model's task (`model.task`: classification by
default, `models.sequence_task` for language models). The carried metric sums are the
task's keys plus `num_batches`; a client's weight is its `num_examples` sum when the
task reports one (sequences), else its `count` (classified examples).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_compress.models import Model, is_stateful


class ClientOutput(NamedTuple):
  """What a client hands to the server: its update, its weight, its metric sums, and its
  final model state (() for a stateless model)."""

  delta: Any
  num_examples: jax.Array
  metrics: dict[str, jax.Array]
  model_state: Any = ()


class GlobalModel(NamedTuple):
  """What the clients of a stateful model start from: the server's parameters (as
  broadcast) and model state. The clients of a stateless model start from the
  parameters alone."""

  params: Any
  state: Any


class ClientTrainer(NamedTuple):
  """Local work as three pure functions.

  init(start) -> carry; step(carry, start, x, y, mask, key) -> carry;
  finalize(carry, start) -> ClientOutput. `start` is the global model the clients train
  from: its parameters for a stateless model, a `GlobalModel` for a stateful one. The
  carry is a tuple whose last element is the metric sums (a stateful model's state is
  the element before).
  """

  init: Callable
  step: Callable
  finalize: Callable


def _metric_keys(model: Model) -> tuple[str, ...]:
  """The carried metric keys: the task's sum keys (traced, nothing runs, on a one-example
  batch), then `num_batches`: (loss_sum, correct, count, num_batches) for classification."""
  x = jax.ShapeDtypeStruct((1, *model.input_shape), jnp.float32)

  def sums(key, x):
    params = model.init(key)
    if is_stateful(model):
      logits = model.apply_with_state(params, model.init_state(key), x)[0]
    else:
      logits = model.apply(params, x)
    y = jnp.zeros(logits.shape[:-1], jnp.int32)
    return model.task.metric_sums(logits, y, jnp.ones((1,), bool))

  keys = tuple(jax.eval_shape(sums, jax.random.key(0), x))
  return keys + ("num_batches",)


def _metrics_fns(model: Model) -> tuple[Callable, Callable]:
  """`(zero() -> sums, add(total, logits, y, mask) -> sums)` over the model's task."""
  keys = _metric_keys(model)
  metric_sums = model.task.metric_sums

  def zero():
    return {k: jnp.zeros((), jnp.float32) for k in keys}

  def add(total, logits, y, mask):
    sums = metric_sums(logits, y, mask)
    sums["num_batches"] = jnp.any(mask).astype(jnp.float32)
    return {k: total[k] + sums[k] for k in keys}

  return zero, add


def _weight(metrics: dict[str, jax.Array]) -> jax.Array:
  """A client's aggregation weight: sequences for a sequence task, else examples."""
  return metrics["num_examples"] if "num_examples" in metrics else metrics["count"]


def _train_forward(model: Model) -> Callable:
  """`forward(params, model_state, x, key) -> (logits, new_model_state)` in training mode.

  For a stateless model the state is () and the forward pass is `model.apply`, as it
  always was: the traced program of a stateless model does not change.
  """
  if is_stateful(model):
    return lambda p, s, x, key: model.apply_with_state(p, s, x, train=True, rng=key)
  return lambda p, s, x, key: (model.apply(p, x, train=True, rng=key), ())


def _start_parts(model: Model) -> Callable:
  """`parts(start) -> (global params, global model state)`."""
  if is_stateful(model):
    return lambda start: (start.params, start.state)
  return lambda start: (start, ())


def _carry_packing(model: Model) -> tuple[Callable, Callable]:
  """`(pack, unpack)` between a carry's parts `(*parts, model_state, metrics)` and the
  carry: the parts as they are for a stateful model; without the model state for a
  stateless one, whose carry (and traced program) is then what it always was."""
  if is_stateful(model):
    return (lambda *parts: parts), (lambda carry: carry)
  return (lambda *parts: parts[:-2] + parts[-1:]), (lambda carry: carry[:-1] + ((), carry[-1]))


def _keep_if(active, new, old):
  return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)


def local_sgd(
  model: Model, optimizer: optax.GradientTransformation, *, proximal_mu: float = 0.0
) -> ClientTrainer:
  """FedAvg's client (FedProx's with `proximal_mu > 0`): optimizer steps on local batches.

  The delta is `local params - global params`. Metrics are those of the forward pass
  of each step, as TFF reports them. A stateful model's state starts as the global
  one, is updated by every step (training mode) and is returned; a fully masked batch
  leaves it unchanged, like the parameters and the optimizer state.
  """
  forward, parts = _train_forward(model), _start_parts(model)
  pack, unpack = _carry_packing(model)
  zero_metrics, add_metrics = _metrics_fns(model)
  task_loss = model.task.loss

  def init(start):
    global_params, model_state = parts(start)
    return pack(global_params, optimizer.init(global_params), model_state, zero_metrics())

  def step(carry, start, x, y, mask, key):
    params, opt_state, model_state, metrics = unpack(carry)
    global_params = parts(start)[0]

    def loss_fn(p):
      logits, new_model_state = forward(p, model_state, x, key)
      loss = task_loss(logits, y, mask)
      if proximal_mu:
        sq = sum(
          jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(global_params))
        )
        loss = loss + 0.5 * proximal_mu * sq
      return loss, (logits, new_model_state)

    (_, (logits, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    active = jnp.any(mask)
    return pack(
      _keep_if(active, new_params, params),
      _keep_if(active, new_opt_state, opt_state),
      _keep_if(active, new_model_state, model_state),
      add_metrics(metrics, logits, y, mask),
    )

  def finalize(carry, start):
    params, _, model_state, metrics = unpack(carry)
    delta = jax.tree.map(jnp.subtract, params, parts(start)[0])
    return ClientOutput(delta, _weight(metrics), metrics, model_state)

  return ClientTrainer(init, step, finalize)


def gradient(model: Model) -> ClientTrainer:
  """FedSGD's client: the gradient over all local examples, sent as delta = -gradient.

  With a server SGD optimizer of rate eta the global step is then `-eta * mean gradient`.
  A stateful model's state is carried through the batches (training mode, at the global
  parameters) and returned, as in `local_sgd`.
  """
  forward, parts = _train_forward(model), _start_parts(model)
  pack, unpack = _carry_packing(model)
  zero_metrics, add_metrics = _metrics_fns(model)
  task_loss = model.task.loss

  def init(start):
    global_params, model_state = parts(start)
    return pack(jax.tree.map(jnp.zeros_like, global_params), model_state, zero_metrics())

  def step(carry, start, x, y, mask, key):
    grad_sum, model_state, metrics = unpack(carry)

    def loss_sum(p):
      logits, new_model_state = forward(p, model_state, x, key)
      return (
        task_loss(logits, y, mask) * model.task.num_scored(y, mask),
        (logits, new_model_state),
      )

    (_, (logits, new_model_state)), grads = jax.value_and_grad(loss_sum, has_aux=True)(
      parts(start)[0]
    )
    return pack(
      jax.tree.map(jnp.add, grad_sum, grads),
      _keep_if(jnp.any(mask), new_model_state, model_state),
      add_metrics(metrics, logits, y, mask),
    )

  def finalize(carry, start):
    grad_sum, model_state, metrics = unpack(carry)
    count = jnp.maximum(metrics["count"], 1.0)
    return ClientOutput(
      jax.tree.map(lambda g: -g / count, grad_sum), _weight(metrics), metrics, model_state
    )

  return ClientTrainer(init, step, finalize)
