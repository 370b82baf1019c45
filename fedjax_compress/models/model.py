"""The functional model the library trains, its task (loss and metrics), and adapters
from Flax modules."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple, Protocol, TypeGuard

import jax
import jax.numpy as jnp
from flax import linen, nnx

from fedjax_compress.data.text import TokenIds
from fedjax_compress.streams import DROPOUT_STREAM

Params = Any
State = Any  # a model's state: a pytree of arrays (e.g. BatchNorm's running statistics)

# Linen collections that are not model state: `sow`'s debugging output.
_NOT_STATE = ("params", "intermediates")


class Task(NamedTuple):
  """What a model's outputs are scored by: its training loss and evaluation metrics.

  Every function takes `(logits, y, mask)` for one batch: `mask` [b] marks real
  examples (False: padding of the round's fixed shapes).

  Attributes:
    name: "classification" or "sequence", for messages.
    loss: `loss(logits, y, mask) -> scalar`, the mean loss of the scored predictions
      (0 when none is scored); what clients differentiate.
    metric_sums: `metric_sums(logits, y, mask) -> {key: float32 scalar}`, sums that add
      across batches and clients. Always `loss_sum`, `correct` and `count` (the scored
      predictions: examples for classification, non-pad tokens for sequences), so that
      the round's train/loss and train/accuracy are `loss_sum / count` and
      `correct / count`. A key `num_examples`, when present, is the client's weight in
      the average (otherwise `count` is).
    summarize: `summarize(totals) -> {metric name: float}`, the reported metrics from
      summed `metric_sums` (plain Python floats).
    num_scored: `num_scored(y, mask) -> scalar`, the number of predictions `loss`
      averages (`loss * num_scored` is the batch's loss sum, as FedSGD needs).
    tokens: the special ids of a sequence task; None for classification.
  """

  name: str
  loss: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
  metric_sums: Callable[[jax.Array, jax.Array, jax.Array], dict[str, jax.Array]]
  summarize: Callable[[Mapping[str, float]], dict[str, float]]
  num_scored: Callable[[jax.Array, jax.Array], jax.Array]
  tokens: TokenIds | None = None


# --- classification ----------------------------------------------------------------


def masked_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean cross-entropy over the unmasked examples (0 for an all-masked batch)."""
  losses = cross_entropy(logits, labels)
  count = jnp.sum(mask)
  return jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.maximum(count, 1)


def masked_metric_sums(
  logits: jax.Array, labels: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
  """Sums that average correctly across batches and clients: loss, correct, count."""
  losses = cross_entropy(logits, labels)
  correct = jnp.argmax(logits, axis=-1) == labels
  return {
    "loss_sum": jnp.sum(jnp.where(mask, losses, 0.0)),
    "correct": jnp.sum(mask & correct).astype(jnp.float32),
    "count": jnp.sum(mask).astype(jnp.float32),
  }


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-prediction cross-entropy: logits [..., V], integer labels [...] -> [...]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def _ratio(total: float, count: float) -> float:
  return total / max(count, 1.0)


def _summarize_classification(totals: Mapping[str, float]) -> dict[str, float]:
  return {
    "loss": _ratio(totals["loss_sum"], totals["count"]),
    "accuracy": _ratio(totals["correct"], totals["count"]),
    "num_examples": totals["count"],
  }


CLASSIFICATION = Task(
  "classification",
  masked_loss,
  masked_metric_sums,
  _summarize_classification,
  lambda y, mask: jnp.sum(mask),
)


class Model(NamedTuple):
  """A model as pure functions.

  A model may have *state*: variables that training changes other than by gradients,
  such as BatchNorm's running statistics. A stateless model (every model of the zoo)
  sets only the first four fields; a stateful one also sets `init_state` and
  `apply_with_state`, and its `apply` raises (it has no state to read): the state is
  explicit, never hidden, so federated training can start clients from the server's
  state and average what they return (see `learning.rounds`). `is_stateful` tells
  the two apart.

  Attributes:
    init: `init(key) -> params`.
    apply: `apply(params, x, *, train=False, rng=None) -> logits`. `train`: training
      behaviour (dropout on, batch statistics) rather than evaluation behaviour;
      `rng`: the key of the step's randomness (dropout), used only when training.
    input_shape: shape of one example, e.g. (28, 28, 1).
    num_classes: number of output logits.
    init_state: `init_state(key) -> state`, the initial model state; None for a
      stateless model.
    apply_with_state: `apply_with_state(params, state, x, *, train=False, rng=None) ->
      (logits, new_state)`. With `train=True` the new state is the state updated by
      the batch (BatchNorm's running averages); with `train=False` the state is only
      read (running averages used) and returned as given. None for a stateless model.
    task: the loss and metrics of its outputs; by default `CLASSIFICATION` (labels
      [b], one logit vector per example). Language models carry a `sequence_task`.
  """

  init: Callable[[jax.Array], Params]
  apply: Callable[..., jax.Array]
  input_shape: tuple[int, ...]
  num_classes: int
  init_state: Callable[[jax.Array], State] | None = None
  apply_with_state: Callable[..., tuple[jax.Array, State]] | None = None
  task: Task = CLASSIFICATION


class StatefulModel(Protocol):
  """A `Model` that `is_stateful` accepts: its `init_state` and `apply_with_state` are set
  (for the type checker; the objects are `Model`s)."""

  @property
  def init(self) -> Callable[[jax.Array], Params]: ...
  @property
  def apply(self) -> Callable[..., jax.Array]: ...
  @property
  def input_shape(self) -> tuple[int, ...]: ...
  @property
  def num_classes(self) -> int: ...
  @property
  def init_state(self) -> Callable[[jax.Array], State]: ...
  @property
  def apply_with_state(self) -> Callable[..., tuple[jax.Array, State]]: ...
  @property
  def task(self) -> Task: ...


def is_stateful(model: Model) -> TypeGuard[StatefulModel]:
  """Whether `model` has state (`init_state` and `apply_with_state` set)."""
  if (model.init_state is None) != (model.apply_with_state is None):
    raise ValueError(
      "A stateful Model sets both init_state and apply_with_state; this one sets only one of them."
    )
  return model.apply_with_state is not None


def from_flax(
  module: linen.Module | Callable[[nnx.Rngs], nnx.Module],
  input_shape: tuple[int, ...],
  num_classes: int,
) -> Model:
  """Wraps a Linen module, or a factory `rngs -> nnx.Module`, as a `Model`.

  Linen: a `__call__` that declares a `train` parameter receives `train=train` (so
  `nn.Dropout(deterministic=not train)` and `nn.BatchNorm(use_running_average=not
  train)` work); when training with an `rng`, it is the `"dropout"` stream. Every
  collection that `init` creates besides `"params"` (and `sow`'s `"intermediates"`),
  e.g. `"batch_stats"`, is model state: `{collection: variables}`; training applies the
  module with those collections mutable and returns their new values.

  NNX: the factory is called with `nnx.Rngs(params=key, dropout=...)` (so `init(key)`
  depends on the key and `nnx.Dropout(rate, rngs=rngs)` has its stream). Before each
  call the module is put in training (`.train()`) or evaluation (`.eval()`) mode and
  its `"dropout"` stream is reseeded with `rng`. Parameters are its `nnx.Param`s; RNG
  streams are rebuilt at every call and are neither; every other variable (e.g.
  `nnx.BatchStat`) is model state, as a pure dict.

  Without state the result is a stateless `Model`; with state, a stateful one.
  """
  if isinstance(module, linen.Module):
    return _from_linen(module, tuple(input_shape), num_classes)
  if callable(module):
    return _from_nnx(module, tuple(input_shape), num_classes)
  raise TypeError(
    f"from_flax expects a flax.linen.Module or a factory rngs -> nnx.Module, "
    f"got {type(module).__name__}."
  )


def _stateful_apply_error(kind: str, names) -> Callable[..., jax.Array]:
  def apply(params, x, *, train=False, rng=None):
    raise TypeError(
      f"This {kind} model has state ({', '.join(names)}): call "
      f"model.apply_with_state(params, state, x, train=..., rng=...)."
    )

  return apply


def _from_linen(module: linen.Module, input_shape, num_classes) -> Model:
  takes_train = "train" in inspect.signature(module.__call__).parameters
  mode = lambda train: {"train": train} if takes_train else {}
  dummy = jnp.zeros((1, *input_shape), jnp.float32)

  def variables(key):
    return module.init({"params": key}, dummy, **mode(False))

  collections = [c for c in jax.eval_shape(variables, jax.random.key(0)) if c not in _NOT_STATE]

  def init(key):
    return variables(key)["params"]

  def rngs(train, rng):
    return {"dropout": rng} if train and rng is not None else None

  if not collections:
    if not takes_train:  # The zoo's models: the computation as it always was.

      def apply(params, x, *, train=False, rng=None):
        return module.apply({"params": params}, x, rngs=rngs(True, rng))
    else:

      def apply(params, x, *, train=False, rng=None):
        return module.apply({"params": params}, x, rngs=rngs(train, rng), train=train)

    return Model(init, apply, input_shape, num_classes)

  def init_state(key):
    full = variables(key)
    return {c: full[c] for c in collections}

  def apply_with_state(params, state, x, *, train=False, rng=None):
    # Mutable in evaluation too, the updates dropped: a module that updates its state
    # whatever `train` says then still evaluates.
    logits, updates = module.apply(
      {"params": params, **state}, x, rngs=rngs(train, rng), mutable=collections, **mode(train)
    )
    return logits, ({c: updates[c] for c in collections} if train else state)

  return Model(
    init,
    _stateful_apply_error("Linen", collections),
    input_shape,
    num_classes,
    init_state,
    apply_with_state,
  )


def _from_nnx(factory: Callable[[nnx.Rngs], nnx.Module], input_shape, num_classes) -> Model:
  def build(key):
    return factory(nnx.Rngs(params=key, dropout=jax.random.fold_in(key, DROPOUT_STREAM)))

  def split(module):
    """(graphdef, params, RNG streams, state)."""
    return nnx.split(module, nnx.Param, nnx.RngState, ...)

  graphdef, abstract_params, abstract_rngs, abstract_state = split(
    nnx.eval_shape(lambda: build(jax.random.key(0)))
  )
  state_names = sorted(
    {
      type(v).__name__
      for v in jax.tree.leaves(abstract_state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    }
  )

  def init(key):
    return nnx.to_pure_dict(split(build(key))[1])

  def init_state(key):
    return nnx.to_pure_dict(split(build(key))[3])

  def apply_with_state(params, state, x, *, train=False, rng=None):
    module = nnx.merge(
      graphdef,
      _filled(abstract_params, params),
      _fresh_rngs(abstract_rngs),
      _filled(abstract_state, state),
    )
    if train:
      module.train()
      if rng is not None:
        nnx.reseed(module, dropout=rng, policy="match_shape")
    else:
      module.eval()
    logits = module(x)
    return logits, (nnx.to_pure_dict(split(module)[3]) if train else state)

  if not state_names:
    apply = lambda params, x, *, train=False, rng=None: apply_with_state(
      params, {}, x, train=train, rng=rng
    )[0]
    return Model(init, apply, input_shape, num_classes)
  return Model(
    init,
    _stateful_apply_error("NNX", state_names),
    input_shape,
    num_classes,
    init_state,
    apply_with_state,
  )


def _filled(abstract: nnx.State, pure: Any) -> nnx.State:
  """A copy of an abstract `nnx.State` holding the values of the pure dict `pure`."""
  state = jax.tree.map(lambda a: a, abstract)  # new Variables: the abstract stays as it is
  nnx.replace_by_pure_dict(state, pure)
  return state


def _fresh_rngs(abstract: nnx.State) -> nnx.State:
  """Concrete RNG streams for an abstract `nnx.RngState`: keys of seed 0, counts 0."""

  def leaf(a):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      key = jax.random.key(0)
      return key if a.shape == () else jax.random.split(key, a.shape)
    return jnp.zeros(a.shape, a.dtype)

  return jax.tree.map(leaf, abstract)


def num_parameters(params: Params) -> int:
  """The number of scalars in a parameter pytree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))


def check_task(model: Model, tokens: TokenIds | None) -> None:
  """Raises `ValueError` unless the model's task fits data with special ids `tokens`
  (`FederatedData.tokens`: None for image data)."""
  have = model.task.tokens
  if tokens is None and have is not None:
    raise ValueError(
      "this is a language model (sequence task) but the data are not token "
      "sequences: pick a classification model for this dataset."
    )
  if tokens is not None and have != tokens:
    raise ValueError(
      f"the data's token ids {tokens} differ from the model's "
      f"{have or '(classification model)'}: use a language model, with "
      f"model._replace(task=sequence_task(data.tokens)) if its ids differ."
    )
