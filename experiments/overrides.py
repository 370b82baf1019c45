"""Config files and `--config.KEY=VALUE` overrides, with one-line errors.

ml_collections' own config flags raise tracebacks for an unknown key and cannot add an
argument to a component (`--config.client_optimizer.momentum=0.5` when the component
has no `momentum` yet). This module reads the config file and applies overrides itself:

- `--config.KEY=VALUE` sets a run-level key; VALUE is read as the type the key has.
- `--config.COMPONENT.ARG=VALUE` sets (or adds) one argument of a component; VALUE is a
  Python literal, or else a string. The component's registry later checks the argument.
- `--config.COMPONENT=NAME` or `=NAME(ARG=VALUE, ...)` replaces the whole component.
- `--config.data_dir=DIR` is short for `--config.data.data_dir=DIR`.

Every mistake is an `OverrideError` whose message names the key and the fix.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from importlib.abc import Loader
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, cast

from ml_collections import ConfigDict

PREFIX = "--config."
SHORTHANDS = {"data_dir": "data.data_dir"}
# Keys of the flat configs before components; an override of one names its new place.
MOVED = {
  "dataset": "data.name",
  "cache_dir": "data.cache_dir",
  "only_digits": "data.only_digits",
  "client_lr": "client_optimizer.learning_rate",
  "server_lr": "server_optimizer.learning_rate",
  "server_momentum": "server_optimizer.momentum (or b1 for adam)",
  "server_beta2": "server_optimizer.b2",
  "server_eps": "server_optimizer.eps",
  "client_momentum": "client_optimizer.momentum",
  "stages": "aggregator.stages",
  "encode_threshold": "aggregator.threshold",
  "quantization_bits": "aggregator.bits",
  "weighted_aggregation": "aggregator.weighted",
  "zeroing": "aggregator.zeroing",
  "clipping": "aggregator.clipping",
  "dp_noise_multiplier": "aggregator.noise_multiplier",
  "dp_clip_norm": "aggregator.clip_norm",
  "error_feedback": "aggregator.error_feedback",
  "client_state_dtype": "aggregator.client_state_dtype",
  "broadcast_stages": "broadcast.stages (with broadcast.name=encoded)",
  "num_clients": "data.num_clients",
  "alpha": "data.alpha",
}


class OverrideError(ValueError):
  """A config file or override is wrong; the message names it and the fix."""


def is_component(value: Any) -> bool:
  """A component is a ConfigDict with a `name`: the factory and its arguments."""
  return isinstance(value, ConfigDict) and "name" in value


def load_file(path: str) -> ConfigDict:
  """`get_config()` of the Python file at `path`, unlocked.

  `FILE.py:ARG` calls `get_config("ARG")`, as ml_collections' config flags do (e.g.
  `configs/shakespeare.py:fedadam`).
  """
  argument = None
  if not Path(path).is_file() and ":" in path:
    path, argument = path.rsplit(":", 1)
  file = Path(path)
  if not file.is_file():
    raise OverrideError(
      f"--config={path}: no such file; pass a config file such as configs/default.py."
    )
  if file.suffix != ".py":
    raise OverrideError(
      f"--config={path}: a config is a Python file defining get_config(); "
      f"pass one such as configs/default.py."
    )
  spec = cast(ModuleSpec, importlib.util.spec_from_file_location(f"_config_{file.stem}", file))
  module = importlib.util.module_from_spec(spec)
  try:
    cast(Loader, spec.loader).exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  # a user's file: any error
    raise OverrideError(
      f"--config={path}: the file fails to load ({type(e).__name__}: "
      f"{e}); fix it, or start from configs/default.py."
    ) from e
  if not callable(getattr(module, "get_config", None)):
    raise OverrideError(
      f"--config={path}: the file has no get_config() function; a config "
      f"file defines get_config() returning an ml_collections.ConfigDict."
    )
  try:
    config = module.get_config() if argument is None else module.get_config(argument)
  except (TypeError, ValueError) as e:
    raise OverrideError(
      f"--config={path}{'' if argument is None else ':' + argument}: "
      f"get_config({'' if argument is None else repr(argument)}) fails "
      f"({e})."
    ) from e
  if not isinstance(config, ConfigDict):
    raise OverrideError(
      f"--config={path}: get_config() returned {type(config).__name__}, "
      f"not an ml_collections.ConfigDict."
    )
  config.unlock()
  return config


def split_argv(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(the other arguments, the (KEY, VALUE) pairs of `--config.KEY=VALUE`), in order."""
  rest, overrides = [], []
  for arg in argv:
    if not arg.startswith(PREFIX):
      rest.append(arg)
      continue
    key, eq, value = arg[len(PREFIX) :].partition("=")
    if not eq or not key:
      raise OverrideError(f"{arg}: write {PREFIX}KEY=VALUE (with '=').")
    overrides.append((key, value))
  return rest, overrides


def apply(config: ConfigDict, key: str, text: str | Any) -> None:
  """Sets `config[key]` (a dotted path) from an override; raises `OverrideError`."""
  key = SHORTHANDS.get(key, key)
  head, _, arg = key.partition(".")
  if head not in config:
    raise OverrideError(_unknown_key(config, head))
  current = config[head]
  if is_component(current):
    if not arg:
      config[head] = parse_component(text, f"config.{head}")
    elif "." in arg or not arg.isidentifier():
      raise OverrideError(
        f"config.{key}: a component's arguments are one level deep; "
        f"write config.{head}.ARGUMENT=VALUE."
      )
    else:
      old = current[arg] if arg in current else None
      current[arg] = text if arg == "name" else _typed(text, old, f"config.{key}")
  elif arg:
    raise OverrideError(f"config.{head} is a value, not a component: write --config.{head}=VALUE.")
  else:
    config[head] = _typed(text, current, f"config.{head}")


def parse_component(text: str | Any, where: str) -> ConfigDict:
  """'adam(learning_rate=0.01, b1=0.9)' or 'adam' -> a component ConfigDict."""
  if isinstance(text, ConfigDict):
    return text
  try:
    node = ast.parse(str(text).strip(), mode="eval").body
  except SyntaxError:
    node = None
  if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted name
    return parse_component(node.value, where)
  if isinstance(node, ast.Name):
    return ConfigDict({"name": node.id})
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
    arguments = {}
    for keyword in node.keywords:
      try:
        arguments[keyword.arg] = ast.literal_eval(keyword.value)
      except ValueError:
        raise OverrideError(
          f"{where}={text!r}: the value of {keyword.arg!r} must be a "
          f"literal (a number, a quoted string, True/False)."
        ) from None
    return ConfigDict({"name": node.func.id, **arguments})
  if str(text).startswith("tfds:"):  # a TFDS dataset name is not an identifier
    return ConfigDict({"name": str(text)})
  raise OverrideError(
    f"{where}={text!r}: write NAME or NAME(ARGUMENT=VALUE, ...), e.g. 'adam(learning_rate=0.01)'."
  )


def _typed(text: str | Any, like: Any, where: str) -> Any:
  """`text` read as the type of `like` (a literal, or a string, when `like` is None)."""
  if not isinstance(text, str):  # from code (sweep variants): already a value
    return text
  if like is None:
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  if isinstance(like, bool):
    if text.lower() in ("true", "1"):
      return True
    if text.lower() in ("false", "0"):
      return False
    raise OverrideError(f"{where}={text!r} is invalid: it must be True or False.")
  if isinstance(like, int):
    try:
      return int(text)
    except ValueError:
      raise OverrideError(f"{where}={text!r} is invalid: it must be an integer.") from None
  if isinstance(like, float):
    try:
      return float(text)
    except ValueError:
      raise OverrideError(f"{where}={text!r} is invalid: it must be a number.") from None
  if isinstance(like, str):
    return text
  raise OverrideError(f"{where} holds a {type(like).__name__}; set it in a config file.")


def _unknown_key(config: ConfigDict, key: str) -> str:
  if key in MOVED:
    return f"config.{key} is now config.{MOVED[key]}."
  hint = difflib.get_close_matches(key, list(config), n=1)
  return (
    f"config has no key {key!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
    f"its keys: {', '.join(sorted(config))}. A component's own arguments go inside "
    f"it, e.g. --config.client_optimizer.momentum=0.5."
  )


def load(path: str, overrides: list[tuple[str, str]]) -> ConfigDict:
  """The config file at `path` with `overrides` applied in order."""
  config = load_file(path)
  for key, value in overrides:
    apply(config, key, value)
  return config
