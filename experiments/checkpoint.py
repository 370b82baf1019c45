"""Checkpoints of a run: the server state and the run's totals, saved atomically.

Client sampling, shuffling and every PRNG key are pure functions of (seed, round), so
the round number and the server state (model, optimizer, aggregator and stage states)
are all a run needs to go on exactly as if it had never stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """Saves every round it is given; keeps the newest `keep`; restores the newest readable."""

  def __init__(self, directory: str | Path, keep: int):
    self.failures: list[str] = []
    self._manager = ocp.CheckpointManager(
      Path(directory).absolute(),
      # Synchronous saves: a round is not reported done before its checkpoint is.
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False
      ),
    )

  def save(self, round_num: int, state: Any, meta: dict[str, Any]) -> None:
    self._manager.save(
      round_num,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(_saved_form(state)), meta=ocp.args.JsonSave(meta)
      ),
    )

  def steps(self) -> list[int]:
    """The rounds that have a checkpoint, oldest first (readable or not)."""
    return sorted(self._manager.all_steps())

  def restore_latest(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest checkpoint that restores, as (round, state, meta); None if none does.

    An unreadable checkpoint (partial, corrupt) is skipped, with a warning when an older
    one restores; `failures` then holds why each newer one did not.
    """
    self.failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_saved_form(like)), meta=ocp.args.JsonRestore()
          ),
        )
      except Exception as e:  # pylint: disable=broad-except
        self.failures.append(f"round {step}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
        continue
      for failure in self.failures:
        logging.warning(
          "Checkpoint of %s in %s is unreadable; resuming from round %d.",
          failure,
          self._manager.directory,
          step,
        )
      return step, _from_saved_form(restored.state, like), restored.meta
    return None

  def close(self) -> None:
    self._manager.close()


def _saved_form(state: Any) -> Any:
  """A NamedTuple state as a dict of its fields, fields that are exactly `()` left out.

  A field added to the state later and empty where unused (the client-state table of an
  aggregator without per-client state) then leaves older checkpoints readable.
  """
  if not hasattr(state, "_asdict"):
    return state
  return {k: v for k, v in state._asdict().items() if not (isinstance(v, tuple) and v == ())}


def _from_saved_form(saved: Any, like: Any) -> Any:
  return like._replace(**saved) if hasattr(like, "_asdict") else saved
