"""Config -> the experiment's parts, every key checked before any work.

A config has run-level keys (`RUN_KEYS`) and components (`COMPONENTS`), each
`{name, ...arguments}`: the name picks a factory from its registry, and the arguments
are checked against that factory's signature when the config is bound, so a key that
nothing would read stops the run before data is read (see `fedjax_compress.registry`).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, NamedTuple

import ml_collections

from fedjax_compress import aggregators, learning, models
from fedjax_compress.data import FederatedData, bind_dataset
from fedjax_compress.optimizers import create_optimizer
from fedjax_compress.registry import ComponentError


class ConfigError(ValueError):
  """A config key is unknown, unread or out of range; the message names it and the fix."""


def _int_at_least(low: int) -> Callable[[Any], str | None]:
  return lambda v: (
    None
    if isinstance(v, int) and not isinstance(v, bool) and v >= low
    else f"it must be an integer >= {low}"
  )


def _one_of(*values: str) -> Callable[[Any], str | None]:
  return lambda v: None if v in values else f"valid values are {list(values)}"


def _number_at_least(low: float) -> Callable[[Any], str | None]:
  return lambda v: (
    None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= low
    else f"it must be a number >= {low}"
  )


def _of_type(kind: type) -> Callable[[Any], str | None]:
  return lambda v: None if type(v) is kind else f"it must be a {kind.__name__}"


# Run-level keys and their checks (None: valid; else what is wrong).
RUN_KEYS: dict[str, Callable[[Any], str | None]] = {
  **{
    k: _int_at_least(1)
    for k in (
      "rounds",
      "clients_per_round",
      "batch_size",
      "epochs",
      "eval_every",
      "eval_batch_size",
      "log_every",
      "chunk_size",
      "keep_checkpoints",
      "client_threads",
    )
  },
  "checkpoint_every": _int_at_least(0),
  "seed": _int_at_least(0),
  "shuffle": _of_type(bool),
  "fed_sgd": _of_type(bool),
  "proximal_mu": _number_at_least(0.0),
  "client_weighting": _one_of(*learning.WEIGHTINGS),
  "bit_accounting": _one_of(*aggregators.ACCOUNTINGS),
  "strategy": _one_of(*learning.STRATEGIES),
  "imports": _of_type(str),
}
COMPONENTS = ("data", "model", "client_optimizer", "server_optimizer", "aggregator", "broadcast")


class Bound(NamedTuple):
  """A config's components, checked and ready to build (nothing loaded yet)."""

  load_data: Callable[[str], FederatedData]  # split -> data
  model: functools.partial[models.Model]  # (num_classes=, input_shape=) -> Model
  client_optimizer: Any  # optax.GradientTransformation, None for FedSGD
  server_optimizer: Any
  aggregator: functools.partial[aggregators.Aggregator]  # (num_clients=) -> Aggregator
  broadcast: aggregators.Broadcast


def import_modules(config: ml_collections.ConfigDict) -> None:
  """Imports `config.imports` (modules that register custom components)."""
  imports = config.get("imports", "")
  if not isinstance(imports, str):
    raise ConfigError(
      f"config.imports={imports!r} is invalid: it must be a string of comma-separated module names."
    )
  for module in filter(None, (m.strip() for m in imports.split(","))):
    try:
      importlib.import_module(module)
    except Exception as e:  # pylint: disable=broad-except  # a user's module: any error
      raise ConfigError(
        f"config.imports: cannot import {module!r} ({type(e).__name__}: "
        f"{e}); put it on PYTHONPATH or fix the name."
      ) from e


def check_run_keys(config: ml_collections.ConfigDict) -> None:
  """Every top-level key is known and valid; every component has a name."""
  for key in config:
    if key not in RUN_KEYS and key not in COMPONENTS:
      raise ConfigError(
        f"config.{key} is not a key this project reads: remove it (run "
        f"keys: {', '.join(sorted(RUN_KEYS))}; components: "
        f"{', '.join(COMPONENTS)})."
      )
  for key in (*RUN_KEYS, *COMPONENTS):
    if key not in config:
      raise ConfigError(
        f"config.{key} is missing: start from configs/default.py, which sets every key."
      )
  for key, check in RUN_KEYS.items():
    problem = check(config[key])
    if problem:
      raise ConfigError(f"config.{key}={config[key]!r} is invalid: {problem}.")
  for key in COMPONENTS:
    value = config[key]
    if not isinstance(value, ml_collections.ConfigDict) or not isinstance(value.get("name"), str):
      raise ConfigError(
        f"config.{key}={value!r} is invalid: it must be a component "
        f"{{name, ...arguments}}, e.g. --config.{key}=NAME(ARG=VALUE)."
      )


def arguments(component: ml_collections.ConfigDict) -> dict[str, Any]:
  """A component's arguments: its keys but `name`, as plain Python values."""
  return {k: v for k, v in component.to_dict().items() if k != "name"}


def bind(config: ml_collections.ConfigDict) -> Bound:
  """Checks the whole config and binds its components; loads and builds nothing large."""
  import_modules(config)
  check_run_keys(config)
  if config.fed_sgd and config.proximal_mu:
    raise ConfigError(
      f"config.proximal_mu={config.proximal_mu} is not read with "
      f"config.fed_sgd=True (FedSGD does no local training): set one."
    )

  def component(key: str, make: Callable[[str, dict[str, Any]], Any]) -> Any:
    try:
      return make(config[key].name, arguments(config[key]))
    except (ComponentError, ValueError, TypeError) as e:
      raise ConfigError(f"config.{key}: {e}") from e

  load_data = component("data", lambda n, a: bind_dataset(n, a, seed=config.seed))
  model = component(
    "model", lambda n, a: models.model_registry.bind(n, a, num_classes=None, input_shape=None)
  )
  client_optimizer = component("client_optimizer", create_optimizer)
  if config.fed_sgd != (client_optimizer is None):
    raise ConfigError(
      "config.fed_sgd=True sends gradients and runs no client optimizer: set "
      "--config.client_optimizer=none."
      if config.fed_sgd
      else "config.client_optimizer=none: clients need an optimizer, e.g. "
      "--config.client_optimizer='sgd(learning_rate=0.1)' (or set config.fed_sgd=True)."
    )
  server_optimizer = component("server_optimizer", create_optimizer)
  if server_optimizer is None:
    raise ConfigError(
      "config.server_optimizer=none: the server needs an optimizer; FedAvg's "
      "is --config.server_optimizer='sgd(learning_rate=1.0)'."
    )
  # The population is known once the data is read: the aggregator is built here with
  # none, which checks every argument (a private one defers what needs the population),
  # and again for the data by `build_aggregator`.
  aggregator = component(
    "aggregator",
    lambda n, a: aggregators.aggregator_registry.bind(
      n,
      a,
      accounting=aggregators.check_accounting(config.bit_accounting),
      clients_per_round=config.clients_per_round,
      num_clients=None,
      rounds=config.rounds,
    ),
  )
  component("aggregator", lambda n, a: aggregator())
  broadcast = component("broadcast", aggregators.create_broadcast)
  return Bound(load_data, model, client_optimizer, server_optimizer, aggregator, broadcast)


def build_model(bound: Bound, data: FederatedData) -> models.Model:
  """The config's model for `data`'s classes and example shape."""
  try:
    return bound.model(num_classes=data.num_classes, input_shape=data.example_shape)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.model: {e}") from e


def build_aggregator(
  config: ml_collections.ConfigDict, bound: Bound, num_clients: int | None
) -> aggregators.Aggregator:
  """The config's aggregator for a population of `num_clients` (None: unknown).

  A private aggregator (one with `privacy`) sums unweighted updates, so it needs
  `client_weighting="uniform"`: weights would be ignored, which this project refuses.
  """
  context = {"num_clients": num_clients}
  try:
    aggregator = bound.aggregator(
      **{k: v for k, v in context.items() if k in bound.aggregator.keywords}
    )
  except (ComponentError, ValueError, TypeError) as e:
    raise ConfigError(f"config.aggregator: {e}") from e
  if aggregator.privacy is not None and config.client_weighting != "uniform":
    raise ConfigError(
      f"config.aggregator={config.aggregator.name!r} is differentially private and sums "
      f"unweighted updates (a weight would be a client's influence): set "
      f"--config.client_weighting=uniform."
    )
  return aggregator


def build_process(
  config: ml_collections.ConfigDict,
  bound: Bound,
  model: models.Model,
  client_ids=None,
  aggregator: aggregators.Aggregator | None = None,
) -> learning.Process:
  """FedAvg with the config's optimizers, aggregator, broadcast and execution.

  `aggregator` defaults to `build_aggregator` for the population `client_ids`.
  """
  if aggregator is None:
    aggregator = build_aggregator(config, bound, None if client_ids is None else len(client_ids))
  return learning.fed_avg(
    model,
    bound.client_optimizer,
    bound.server_optimizer,
    aggregator=aggregator,
    client_weighting=config.client_weighting,
    proximal_mu=config.proximal_mu,
    fed_sgd=config.fed_sgd,
    strategy=config.strategy,
    chunk_size=config.chunk_size,
    bit_accounting=config.bit_accounting,
    client_ids=client_ids,
    broadcast=bound.broadcast,
    client_threads=config.client_threads,
  )
