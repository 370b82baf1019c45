"""The training loop: config -> parts -> rounds, metrics, evaluation, checkpoints.

Order matters for trust: the whole config is checked (`build.bind`) and the workdir
judged (`workdir`) before any data loads, and nothing in the workdir is written before
the run knows where it starts from.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
import jax.numpy as jnp
import ml_collections
from absl import logging

from configs import default as default_config
from experiments import build, workdir as workdir_lib
from experiments.build import ConfigError
from experiments.checkpoint import Checkpointer
from experiments.workdir import METRICS_FILE, WorkdirError
from fedjax_compress import learning, models
from fedjax_compress.data import pipeline
from fedjax_compress.data.prefetch import prefetched
from fedjax_compress.learning import distributed, execution
from fedjax_compress.streams import INIT_STREAM

__all__ = [
  "ConfigError",
  "WorkdirError",
  "NonFiniteModelError",
  "RunInterrupted",
  "train_and_evaluate",
]

# Per-process facts, not results: they differ between a resumed and an unbroken run.
DIAGNOSTIC_KEYS = ("round_seconds", "compiles")
_all_finite = jax.jit(
  lambda tree: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
)


class NonFiniteModelError(RuntimeError):
  """The global model became NaN/Inf; the last good checkpoint is kept."""


class RunInterrupted(Exception):
  """Ctrl-C: the message says where the same command will resume from."""


class StopRequest:
  """Ctrl-C while rounds run: the first finishes the round (and checkpoints it), the
  second stops at once.

  Stopping between rounds keeps every file consistent and lets the run resume from the
  round it finished; a KeyboardInterrupt inside a library call (TensorFlow's summary
  writer) can crash the process instead. Only the main thread can take signals;
  elsewhere Ctrl-C keeps its default behaviour.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)

  def _handle(self, signum, frame) -> None:
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True
    print("Ctrl-C: stopping when this round ends (press it again to stop at once).", flush=True)


class ProgressLine:
  """A console line per report: round, loss, accuracy, rounds/s and ETA."""

  def __init__(self, total_rounds: int, every: int):
    self._total, self._every = total_rounds, every
    self._start = time.perf_counter()
    self._done = 0

  def __call__(self, record: dict[str, Any]) -> None:
    self._done += 1
    r = record["round"]
    if r % self._every and r != self._total:
      return
    rate = self._done / max(time.perf_counter() - self._start, 1e-9)
    eta = (self._total - r) / rate
    evaluation = f"  eval acc {record['eval/accuracy']:.4f}" if "eval/accuracy" in record else ""
    print(
      f"round {r:>5}/{self._total}  loss {record['train/loss']:.4f}  "
      f"acc {record['train/accuracy']:.4f}{evaluation}  {rate:.2f} rounds/s  "
      f"ETA {_duration(eta)}  uplink {record['aggregated_bits'] / 2**20:.2f} Mibit",
      flush=True,
    )


def _duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@contextlib.contextmanager
def _native_stderr_silenced(silenced: bool):
  """Sends file descriptor 2 to /dev/null inside the block (C++ logs that bypass Python).

  TensorFlow 2.21 prints its oneDNN and CPU-feature lines through absl's C++ logger
  before TF_CPP_MIN_LOG_LEVEL is read, so only the descriptor can hide them. An import
  error still surfaces: as a Python exception, after the descriptor is back.
  """
  if not silenced:
    yield
    return
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


class TensorBoard:
  """clu's SummaryWriter, created at the first write.

  clu's writer imports TensorFlow (seconds); creating it at the first write lets the
  first round run before that import. TensorFlow's C++ log lines are silenced while
  library logs are hidden (absl verbosity WARNING, as `experiments.main` sets unless
  --verbosity is given).
  """

  _writer: Any  # clu's SummaryWriter once made; None before

  def __init__(self, workdir: str, enabled: bool):
    self._workdir, self._enabled, self._writer = workdir, enabled, None

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self._enabled:
      return
    if self._writer is None:
      os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
      with _native_stderr_silenced(logging.get_verbosity() < logging.INFO):
        from clu import metric_writers  # pylint: disable=import-outside-toplevel

        self._writer = metric_writers.SummaryWriter(self._workdir)
        self._writer.write_scalars(step, scalars)
      return
    self._writer.write_scalars(step, scalars)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


def check_labels(model, data) -> None:
  """Labels must index the model's outputs: a 5-class model on 10 classes is refused."""
  outputs = learning.output_width(model)
  if outputs < data.num_classes:
    raise ConfigError(
      f"the model has {outputs} outputs but {data.source} has "
      f"{data.num_classes} classes (labels up to {data.num_classes - 1}): "
      f"build the model with num_classes={data.num_classes}."
    )


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  allow_config_change: bool = False,
  restart: bool = False,
) -> list[dict[str, Any]]:
  """Runs `config.rounds` rounds; writes metrics.jsonl, TensorBoard events, checkpoints.

  A workdir with checkpoints resumes after the newest readable one, and the run then
  writes the same metrics as one that never stopped. See `experiments.workdir` for what
  is refused and what `allow_config_change` and `restart` do.
  """
  distributed.initialize_from_env()  # multi-process when FEDJAX_COORDINATOR_ADDRESS is set
  bound = build.bind(config)
  changed = _judge_workdir(config, workdir, allow_config_change, restart)
  train, test = bound.load_data("train"), bound.load_data("test")
  if config.clients_per_round > len(train.client_ids):
    raise ConfigError(
      f"config.clients_per_round={config.clients_per_round} exceeds the "
      f"{len(train.client_ids)} training clients of {train.source}."
    )
  model = build.build_model(bound, train)
  try:
    models.check_task(model, train.tokens)
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from e
  check_labels(model, train)
  aggregator = build.build_aggregator(config, bound, len(train.client_ids))
  # Before any state exists: a private aggregator's plan is resolved (a target epsilon
  # calibrated) and its mistakes stop the run here.
  epsilons = privacy_epsilons(aggregator, jax.eval_shape(model.init, jax.random.key(0)))
  process = build.build_process(config, bound, model, train.client_ids, aggregator)
  evaluate = _evaluator(model)
  test_batches = pipeline.eval_batches(test, batch_size=config.eval_batch_size)

  root = jax.random.key(config.seed)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  done, state, totals = _resume(
    checkpointer, process.init(jax.random.fold_in(root, INIT_STREAM)), workdir, changed
  )
  if changed:
    kept = [workdir_lib.keep_copy(workdir, f) for f in (workdir_lib.CONFIG_FILE, METRICS_FILE)]
    print(
      f"Config changed ({'; '.join(changed)}): the earlier "
      f"{' and '.join(filter(None, kept))} are kept in {workdir}.",
      flush=True,
    )
  with open(os.path.join(workdir, workdir_lib.CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  history = workdir_lib.truncate_metrics(workdir, done)

  def round_batch(r):
    ids = pipeline.sample_clients(
      train.client_ids, config.clients_per_round, seed=config.seed, round_num=r
    )
    return pipeline.round_batch(
      train,
      ids,
      batch_size=config.batch_size,
      epochs=config.epochs,
      seed=config.seed,
      round_num=r,
      shuffle=config.shuffle,
    )

  writer = TensorBoard(workdir, enabled=jax.process_index() == 0)
  progress = ProgressLine(config.rounds, config.log_every)
  compiles_before = execution.compile_count()
  saved = done
  rounds = range(done + 1, config.rounds + 1)
  try:
    with open(os.path.join(workdir, METRICS_FILE), "a") as log, StopRequest() as stop:
      start = time.perf_counter()
      for r, batch in zip(rounds, prefetched(round_batch, rounds)):
        state, metrics = process.next(state, batch, jax.random.fold_in(root, r))
        if not bool(_all_finite(state.params)):
          raise NonFiniteModelError(
            f"round {r}: the global model has NaN or Inf values, so the run stops here. The "
            f"last good checkpoint in {workdir}/checkpoints is intact. Lower the learning "
            f"rates, or add zeroing/clipping (--config.aggregator.zeroing=True "
            f"--config.aggregator.clipping=True)."
          )
        for name in totals:
          totals[name] += metrics[f"round_{name}"]
        record = {"round": r, **metrics, **totals, "round_seconds": time.perf_counter() - start}
        if epsilons is not None:
          record["privacy/epsilon"] = float(epsilons[r - 1])
        record["compiles"] = execution.compile_count() - compiles_before  # this run, cumulative
        if r % config.eval_every == 0 or r == config.rounds:
          record.update({f"eval/{k}": v for k, v in evaluate(state, test_batches).items()})
        log.write(json.dumps(record) + "\n")
        log.flush()
        if config.checkpoint_every and (r % config.checkpoint_every == 0 or r == config.rounds):
          checkpointer.save(r, state, {"totals": totals})
          saved = r
        progress(record)
        writer.write(r, {k: v for k, v in record.items() if k != "round"})
        history.append(record)
        if stop.requested and r < config.rounds:
          if config.checkpoint_every and saved != r:
            checkpointer.save(r, state, {"totals": totals})
            saved = r
          raise KeyboardInterrupt
        start = time.perf_counter()
  except KeyboardInterrupt:
    where = (
      f"after round {saved}, its newest checkpoint" if saved else "from round 1 (no checkpoint yet)"
    )
    raise RunInterrupted(
      f"interrupted: running the same command again resumes {workdir} {where}."
    ) from None
  finally:
    checkpointer.close()
    writer.close()
  return history


def privacy_epsilons(aggregator, params) -> np.ndarray | None:
  """Epsilon after each round of the run for a private aggregator (None otherwise).

  Resolved before the first round (a target epsilon is calibrated here), printed, and
  logged round by round as `privacy/epsilon` (metrics.jsonl and TensorBoard).
  """
  if aggregator.privacy is None:
    return None
  try:
    plan = aggregator.privacy(params)
  except ValueError as e:
    raise ConfigError(f"config.aggregator: {e}") from e
  epsilons = plan.epsilons()
  print(
    f"Privacy: {plan.describe()}; epsilon after {plan.rounds} rounds "
    f"{epsilons[-1]:.4g} ({plan.accountant.upper()}, dp-accounting).",
    flush=True,
  )
  return epsilons


def _evaluator(model):
  """`evaluate(state, batches)`: with the server's model state when the model has one."""
  evaluate = learning.evaluator(model)
  return lambda state, batches: evaluate(state.params, batches, state.model_state)


def _judge_workdir(config, workdir: str, allow_config_change: bool, restart: bool) -> list[str]:
  """Refuses what would overwrite an earlier run; returns the allowed config changes."""
  if restart and workdir_lib.has_run(workdir):
    moved = workdir_lib.move_aside(workdir)
    print(f"--restart: moved the earlier run in {workdir} to {moved}.", flush=True)
  workdir_lib.check_writable(workdir)
  before = workdir_lib.earlier_config(workdir)
  if before is None:
    if workdir_lib.metric_records(workdir) or os.path.isdir(os.path.join(workdir, "checkpoints")):
      raise WorkdirError(
        f"{workdir} holds metrics or checkpoints but no config.json, so "
        f"whether this run continues them is unknown. "
        f"{workdir_lib.fixes(workdir)}."
      )
    return []
  if "data" not in before:
    raise WorkdirError(
      f"{workdir} holds a run whose config predates components "
      f"(config.data, config.aggregator, ...), so it cannot be compared. "
      f"{workdir_lib.fixes(workdir)}."
    )
  defaults = workdir_lib.as_dict(default_config.get_config())
  changed = workdir_lib.changes(before, workdir_lib.as_dict(config), defaults)
  if changed and not allow_config_change:
    raise WorkdirError(
      f"{workdir} holds a run with a different config ({'; '.join(changed)}). "
      f"{workdir_lib.fixes(workdir)}, or pass --allow_config_change to continue that run "
      f"with the new config."
    )
  return changed


def _resume(checkpointer: Checkpointer, state, workdir: str, changed: list[str]):
  """(rounds done, state, totals) from the newest readable checkpoint.

  Refuses, leaving every file as it is, when checkpoints exist but none restores into
  this config's state, and when a changed config would recompute rounds that have
  metrics but no checkpoint.
  """
  totals = {"broadcasted_bits": 0, "aggregated_bits": 0, "update_bits": 0}
  steps = checkpointer.steps()
  restored = checkpointer.restore_latest(state) if steps else None
  if steps and restored is None:
    raise WorkdirError(
      f"none of the checkpoints in {workdir}/checkpoints (rounds {steps}) restores into "
      f"this config's state{' (changed: ' + '; '.join(changed) + ')' if changed else ''}; "
      f"the newest fails with {checkpointer.failures[0].split(': ', 1)[1][:120]}. The run "
      f"there is left as it is. {workdir_lib.fixes(workdir)}."
    )
  if restored is None:
    records = workdir_lib.metric_records(workdir)
    if records and changed:
      raise WorkdirError(
        f"{workdir} has metrics of {records} rounds but no checkpoint, so "
        f"the new config would rewrite them. {workdir_lib.fixes(workdir)}."
      )
    if records:
      print(
        f"{workdir} has no checkpoint: recomputing its {records} rounds from round 1 "
        f"(the same config and seed give the same metrics).",
        flush=True,
      )
    return 0, state, totals
  done, state, meta = restored
  print(f"Resuming {workdir} after round {done}.", flush=True)
  return done, state, meta["totals"]
