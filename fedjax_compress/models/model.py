"""The functional model the library trains, and adapters from Flax modules."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen, nnx

Params = Any


class Model(NamedTuple):
  """A model as pure functions.

  Attributes:
    init: `init(key) -> params`.
    apply: `apply(params, x, *, train, rng) -> logits`; `rng` feeds dropout and the
      like and may be ignored.
    input_shape: shape of one example, e.g. (28, 28, 1).
    num_classes: number of output logits.
  """
  init: Callable[[jax.Array], Params]
  apply: Callable[..., jax.Array]
  input_shape: tuple[int, ...]
  num_classes: int


def from_flax(module: linen.Module | Callable[[nnx.Rngs], nnx.Module],
              input_shape: tuple[int, ...], num_classes: int) -> Model:
  """Wraps a Linen module, or a factory `rngs -> nnx.Module`, as a `Model`.

  A Linen module's `__call__(x, train=...)` may declare `train`; an NNX module is
  built by the factory so that `init(key)` really depends on the key.
  """
  if isinstance(module, linen.Module):
    return _from_linen(module, input_shape, num_classes)
  if callable(module):
    return _from_nnx(module, input_shape, num_classes)
  raise TypeError(f"from_flax expects a flax.linen.Module or a factory rngs -> nnx.Module, "
                  f"got {type(module).__name__}.")


def _from_linen(module, input_shape, num_classes):
  def init(key):
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    return module.init({"params": key}, dummy)["params"]

  def apply(params, x, *, train=False, rng=None):
    rngs = {"dropout": rng} if rng is not None else None
    return module.apply({"params": params}, x, rngs=rngs)

  return Model(init, apply, tuple(input_shape), num_classes)


def _from_nnx(factory, input_shape, num_classes):
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: factory(nnx.Rngs(0))))

  def init(key):
    _, params = nnx.split(factory(nnx.Rngs(params=key)))
    return nnx.to_pure_dict(params)

  def apply(params, x, *, train=False, rng=None):
    abstract = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
    state = nnx.state(abstract)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)(x)

  return Model(init, apply, tuple(input_shape), num_classes)


def num_parameters(params: Params) -> int:
  """The number of scalars in a parameter pytree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))


def masked_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean cross-entropy over the unmasked examples (0 for an all-masked batch)."""
  losses = _cross_entropy(logits, labels)
  count = jnp.sum(mask)
  return jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.maximum(count, 1)


def masked_metric_sums(logits: jax.Array, labels: jax.Array,
                       mask: jax.Array) -> dict[str, jax.Array]:
  """Sums that average correctly across batches and clients: loss, correct, count."""
  losses = _cross_entropy(logits, labels)
  correct = jnp.argmax(logits, axis=-1) == labels
  return {
      "loss_sum": jnp.sum(jnp.where(mask, losses, 0.0)),
      "correct": jnp.sum(mask & correct).astype(jnp.float32),
      "count": jnp.sum(mask).astype(jnp.float32),
  }


def _cross_entropy(logits, labels):
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
