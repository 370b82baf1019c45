"""Checks of stage and aggregator arguments: types and ranges, never silent clamping.

Every factory checks its arguments when it is called, before anything is traced, and
raises a `ValueError` that names the factory, the argument, the value and what is valid:

    top_k: fraction=5.0 is invalid: it must be in (0, 1]

Types are strict where a wrong type would be read silently: an int argument refuses a
bool (`True` is an int in Python) and a float (`bits=2.0` or `2.5`); a bool argument
refuses 0 and 1; a number refuses NaN and infinities unless the range includes them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np


def invalid(owner: str, name: str, value: Any, rule: str) -> ValueError:
  """The error for argument `name` of `owner`: `owner: name=value is invalid: it must be rule.`"""
  return ValueError(f"{owner}: {name}={value!r} is invalid: it must be {rule}.")


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def integer(owner: str, name: str, value: Any, lo: int, hi: int | None = None) -> int:
  """`value` as an int in lo..hi (no upper bound if `hi` is None)."""
  rule = f"an int in {lo}..{hi}" if hi is not None else f"an int >= {lo}"
  if not (_is_int(value) and lo <= value and (hi is None or value <= hi)):
    raise invalid(owner, name, value, rule)
  return int(value)


def power_of_two(owner: str, name: str, value: Any, *, or_none: bool = False) -> int | None:
  """`value` as an int that is a power of two (1, 2, 4, ...), or None if `or_none`."""
  if value is None and or_none:
    return None
  if not (_is_int(value) and value >= 1 and not value & (value - 1)):
    raise invalid(
      owner, name, value, f"{'None or ' if or_none else ''}a power of two (an int: 1, 2, 4, ...)"
    )
  return int(value)


def real(
  owner: str,
  name: str,
  value: Any,
  lo: float = -math.inf,
  hi: float = math.inf,
  *,
  lo_open: bool = False,
  hi_open: bool = False,
) -> float:
  """`value` (an int or a float, not a bool) as a float in the interval from lo to hi.

  The bounds are closed unless `lo_open` / `hi_open`; an infinite bound admits every
  finite value on its side (and never NaN).
  """
  if lo == -math.inf and hi == math.inf:
    rule = "a finite number"
  elif hi == math.inf:
    rule = f"{'>' if lo_open else '>='} {lo:g}"
  elif lo == -math.inf:
    rule = f"{'<' if hi_open else '<='} {hi:g}"
  else:
    rule = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
  if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
    raise invalid(owner, name, value, rule if rule.startswith("a ") else f"a number {rule}")
  x = float(value)
  ok = math.isfinite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
  if not ok:
    raise invalid(owner, name, value, rule)
  return x


def boolean(owner: str, name: str, value: Any) -> bool:
  """`value` as a bool; 0 and 1 (and strings) are refused, they are not flags."""
  if not isinstance(value, (bool, np.bool_)):
    raise invalid(owner, name, value, "True or False")
  return bool(value)


def choice(owner: str, name: str, value: Any, valid: Sequence[Any]) -> Any:
  """`value` if it is one of `valid`."""
  if isinstance(value, (bool, np.bool_)) or value not in valid:
    raise invalid(owner, name, value, f"one of {list(valid)}")
  return value
