"""Named factories, so that a config can build a component by name.

A config describes a component as its name and the arguments of its factory,
`{"name": "adam", "learning_rate": 0.01, "b1": 0.9}`. A `Registry` checks those
arguments against the factory's signature before anything is built: a key the factory
does not take is an error naming it (never silently ignored), and so is a required
argument left out.

Some arguments come from the run rather than the component (the bit accounting, the
number of classes): they are the registry's `context`. A factory receives the context
arguments that its signature names, and a config may not set them.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable, Generic, Mapping, TypeVar

T = TypeVar("T")


class ComponentError(ValueError):
  """A component's name or arguments are wrong; the message names the key and the fix."""


def signature_arguments(factory: Callable[..., Any]) -> tuple[list[str], list[str], bool]:
  """(names of the keyword-settable parameters, the required ones, takes **kwargs)."""
  try:
    params = inspect.signature(factory).parameters.values()
  except (TypeError, ValueError):  # builtins without a signature
    return [], [], True
  settable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
  names = [p.name for p in params if p.kind in settable]
  required = [p.name for p in params if p.kind in settable and p.default is p.empty]
  var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
  return names, required, var_kw


def check_arguments(
  what: str,
  factory: Callable[..., Any],
  arguments: Mapping[str, Any],
  context: Mapping[str, Any] | tuple[()] = (),
) -> dict[str, Any]:
  """The keyword arguments to call `factory` with: `arguments` plus the context it names.

  Raises `ComponentError` for an argument the factory does not take, a context argument
  set by the config, or a required argument missing; `what` names the component in the
  message, e.g. "optimizer 'adam'".
  """
  names, required, var_kw = signature_arguments(factory)
  context = dict(context)
  for key in arguments:
    if key in context:
      raise ComponentError(f"{key!r} is set by the run, not by the {what} component: remove it.")
    if key not in names and not var_kw:
      hint = difflib.get_close_matches(key, names, n=1)
      takes = ", ".join(n for n in names if n not in context) or "no arguments"
      raise ComponentError(
        f"{key!r} is not an argument of {what}"
        f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; it takes: "
        f"{takes}."
      )
  kwargs = {**{k: v for k, v in context.items() if k in names}, **arguments}
  missing = [n for n in required if n not in kwargs]
  if missing:
    raise ComponentError(
      f"{what} needs {', '.join(repr(m) for m in missing)}: set {' and '.join(missing)}."
    )
  return kwargs


class Registry(Generic[T]):
  """Factories of one kind by name: `register`, `names`, `create`.

  `context` names the arguments that the run supplies (see the module docstring).
  """

  def __init__(self, kind: str, context: tuple[str, ...] = ()):
    self.kind = kind
    self.context = context
    self._factories: dict[str, Callable[..., T]] = {}

  def register(self, name: str, factory: Callable[..., T] | None = None):
    """Registers `factory` under `name`; without `factory`, a decorator that does."""
    if not isinstance(name, str) or not name.isidentifier():
      raise ValueError(f"A {self.kind} name must be a Python identifier; got {name!r}.")
    if factory is None:
      return lambda f: self.register(name, f)
    if not callable(factory):
      raise TypeError(
        f"register a callable that returns a {self.kind}; got {type(factory).__name__}."
      )
    self._factories[name] = factory
    return factory

  def names(self) -> list[str]:
    return sorted(self._factories)

  def __contains__(self, name: object) -> bool:
    return name in self._factories

  def factory(self, name: str) -> Callable[..., T]:
    if name not in self._factories:
      hint = difflib.get_close_matches(str(name), self._factories, n=1)
      raise ComponentError(
        f"unknown {self.kind} {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
        f"valid names: {', '.join(self.names())} (register others with "
        f"register_{self.kind.replace(' ', '_')} and --config.imports)."
      )
    return self._factories[name]

  def bind(
    self, name: str, arguments: Mapping[str, Any] | None = None, **context: Any
  ) -> functools.partial[T]:
    """`factory` with `arguments` and the context it names, checked, not yet called.

    Configs bind every component before any work, so that a wrong key stops the run
    before data is read.
    """
    unknown = set(context) - set(self.context)
    if unknown:
      raise TypeError(
        f"{sorted(unknown)} are not context arguments of the {self.kind} "
        f"registry ({list(self.context)})."
      )
    factory = self.factory(name)
    return functools.partial(
      factory, **check_arguments(f"{self.kind} {name!r}", factory, arguments or {}, context)
    )

  def create(self, name: str, arguments: Mapping[str, Any] | None = None, **context: Any) -> T:
    """`factory(**arguments, **context it names)`, the arguments checked first."""
    return self.bind(name, arguments, **context)()
