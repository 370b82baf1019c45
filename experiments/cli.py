"""What the commands share: one-line errors and flag parsing that keeps
`--config.KEY=VALUE` aside for `experiments.overrides`."""

from __future__ import annotations

import sys
from typing import Callable

from absl import flags

from experiments import overrides

USAGE_ERROR, RUN_ERROR, INTERRUPTED = 2, 1, 130


def fail(message: object, status: int) -> None:
  """Prints `error: message` as one line on stderr and exits with `status`."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(status)


def flags_parser(config_overrides: list[tuple[str, str]]) -> Callable[[list[str]], list[str]]:
  """absl's flag parsing for `app.run`, the (KEY, VALUE) overrides stored in
  `config_overrides`, any mistake one `error:` line."""

  def parse(argv: list[str]) -> list[str]:
    try:
      rest, config_overrides[:] = overrides.split_argv(argv[1:])
      return flags.FLAGS([argv[0], *rest])
    except (flags.Error, overrides.OverrideError) as e:
      fail(e, USAGE_ERROR)
    return []  # unreachable: fail exits

  return parse


def exit_for(error: Exception) -> None:
  """Exits as the commands do for an exception from a run: Ctrl-C's message and 130, a
  user mistake (ValueError, OSError, MemoryError, a non-finite model) as one `error:`
  line and 1; anything else is a bug and is raised again, traceback and all."""
  from experiments import train  # pylint: disable=import-outside-toplevel  # JAX: slow

  if isinstance(error, train.RunInterrupted):
    print(error, file=sys.stderr, flush=True)
    sys.exit(INTERRUPTED)
  if isinstance(error, (ValueError, OSError, MemoryError, train.NonFiniteModelError)):
    fail(error, RUN_ERROR)
  raise error
