"""Optimizers by name: any optax optimizer, its arguments checked against its signature.

`create_optimizer("sgd", {"learning_rate": 0.02, "momentum": 0.9})` is
`optax.sgd(0.02, momentum=0.9)`; an argument `optax.sgd` does not take is an error that
names it. "none" is no optimizer (FedSGD's clients, which only compute a gradient).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import optax

from fedjax_compress.registry import ComponentError, check_arguments

NONE = "none"
EXAMPLES = ("sgd", "adam", "adamw", "adagrad", "yogi", "lamb", "lion", "rmsprop")


def create_optimizer(
  name: str, arguments: Mapping[str, Any] | None = None
) -> optax.GradientTransformation | None:
  """`optax.<name>(**arguments)`, or None for "none" (which takes no arguments)."""
  arguments = dict(arguments or {})
  if name == NONE:
    if arguments:
      raise ComponentError(
        f"optimizer 'none' takes no arguments; remove {', '.join(sorted(arguments))}."
      )
    return None
  factory = getattr(optax, name, None) if isinstance(name, str) else None
  if factory is None or name.startswith("_") or not _returns_transformation(factory):
    raise ComponentError(
      f"unknown optimizer {name!r}: use the name of an optax optimizer, e.g. {', '.join(EXAMPLES)}."
    )
  return factory(**check_arguments(f"optimizer {name!r} (optax.{name})", factory, arguments))


def _returns_transformation(factory: Any) -> bool:
  """Whether `factory` is a function annotated to return an optax transformation."""
  if not inspect.isfunction(factory):
    return False
  returns = inspect.signature(factory).return_annotation
  return isinstance(returns, type) and issubclass(returns, optax.GradientTransformation)
