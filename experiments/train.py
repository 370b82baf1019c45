"""The training loop: config -> data, model, process -> rounds, metrics, evaluation."""

from __future__ import annotations

import importlib
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metric_writers

from fedjax_compress import aggregators, learning, models
from fedjax_compress.data import pipeline
from fedjax_compress.data.prefetch import prefetched
from configs import default as default_config
from experiments.checkpoint import Checkpointer
from fedjax_compress.data.sources import SOURCE_NAMES as DATASETS, load_federated
from fedjax_compress.learning import distributed, execution

CLIENT_OPTIMIZERS = ("sgd", "momentum", "adam")
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "yogi")


METRICS_FILE = "metrics.jsonl"
# Per-process facts, not results: they differ between a resumed and an unbroken run.
DIAGNOSTIC_KEYS = ("round_seconds", "compiles")
_all_finite = jax.jit(lambda tree: jnp.all(jnp.stack(
    [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)])))


class NonFiniteModelError(RuntimeError):
  """The global model became NaN/Inf; the last good checkpoint is kept."""


class ConfigError(ValueError):
  """A config value is unknown or out of range; the message names the key and the fix."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks names and ranges before any work is done."""
  def check(ok, key, allowed):
    if not ok:
      raise ConfigError(f"config.{key}={config[key]!r} is invalid: {allowed}.")

  dataset = config.dataset
  check(dataset in DATASETS or dataset.startswith("tfds:"), "dataset",
        f"valid datasets are {list(DATASETS)} or 'tfds:NAME'")
  check(config.model in models.model_names(), "model", f"valid models are {models.model_names()}")
  check(config.aggregator in aggregators.AGGREGATORS, "aggregator",
        f"valid aggregators are {list(aggregators.AGGREGATORS)}")
  check(config.bit_accounting in aggregators.ACCOUNTINGS, "bit_accounting",
        f"valid values are {list(aggregators.ACCOUNTINGS)}")
  check(config.strategy in learning.STRATEGIES, "strategy",
        f"valid strategies are {list(learning.STRATEGIES)}")
  check(config.client_optimizer in CLIENT_OPTIMIZERS, "client_optimizer",
        f"valid values are {list(CLIENT_OPTIMIZERS)}")
  check(config.server_optimizer in SERVER_OPTIMIZERS, "server_optimizer",
        f"valid values are {list(SERVER_OPTIMIZERS)}")
  check(config.client_weighting in learning.fed_avg_lib.WEIGHTINGS, "client_weighting",
        f"valid values are {list(learning.fed_avg_lib.WEIGHTINGS)}")
  for key in ("rounds", "clients_per_round", "batch_size", "epochs", "eval_every",
              "eval_batch_size", "log_every", "chunk_size", "keep_checkpoints",
              "client_threads"):
    check(int(config[key]) >= 1, key, "it must be an integer >= 1")
  check(config.checkpoint_every >= 0, "checkpoint_every", "it must be >= 0 (0: no checkpoints)")
  for key in ("client_lr", "server_lr", "proximal_mu", "dp_noise_multiplier"):
    check(config[key] >= 0, key, "it must be >= 0")
  check(1 <= config.quantization_bits <= 16, "quantization_bits", "it must be in 1..16")
  check(config.encode_threshold >= 0, "encode_threshold", "it must be >= 0")


def build_optimizer(name: str, lr: float, config) -> optax.GradientTransformation:
  if name == "sgd":
    return optax.sgd(lr)
  if name == "momentum":
    return optax.sgd(lr, momentum=config.server_momentum)
  if name == "adam":
    return optax.adam(lr, b1=config.server_momentum, b2=config.server_beta2, eps=config.server_eps)
  return optax.yogi(lr, b1=config.server_momentum, b2=config.server_beta2, eps=config.server_eps)


def build_aggregator(config) -> aggregators.Aggregator:
  return aggregators.create_aggregator(
      config.aggregator, stages_spec=config.stages, threshold=config.encode_threshold,
      weighted=config.weighted_aggregation, zeroing=config.zeroing, clipping=config.clipping,
      bits=config.quantization_bits, accounting=config.bit_accounting,
      noise_multiplier=config.dp_noise_multiplier, clip_norm=config.dp_clip_norm,
      clients_per_round=config.clients_per_round, error_feedback_kind=config.error_feedback,
      client_state_dtype=config.client_state_dtype)


def build_broadcast(config) -> aggregators.Broadcast:
  return aggregators.create_broadcast(config.broadcast_stages, threshold=config.encode_threshold)


def build_process(config, model: models.Model, client_ids=None) -> learning.Process:
  return learning.fed_avg(
      model, build_optimizer(config.client_optimizer, config.client_lr, config),
      build_optimizer(config.server_optimizer, config.server_lr, config),
      aggregator=build_aggregator(config), client_weighting=config.client_weighting,
      proximal_mu=config.proximal_mu, fed_sgd=config.fed_sgd, strategy=config.strategy,
      chunk_size=config.chunk_size, bit_accounting=config.bit_accounting,
      client_ids=client_ids, broadcast=build_broadcast(config),
      client_threads=config.client_threads)


def load_data(config):
  kwargs = dict(data_dir=config.data_dir or None, only_digits=config.only_digits,
                cache_dir=config.cache_dir or None, seed=config.seed)
  # Partition keys of sources that split data into clients (tfds:NAME).
  kwargs.update({k: config[k] for k in ("num_clients", "alpha") if k in config})
  return load_federated(config.dataset, "train", **kwargs), load_federated(config.dataset, "test", **kwargs)


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
    evaluation = (f"  eval acc {record['eval/accuracy']:.4f}" if "eval/accuracy" in record else "")
    print(f"round {r:>5}/{self._total}  loss {record['train/loss']:.4f}  "
          f"acc {record['train/accuracy']:.4f}{evaluation}  {rate:.2f} rounds/s  "
          f"ETA {_duration(eta)}  uplink {record['aggregated_bits'] / 2**20:.2f} Mibit",
          flush=True)


def _duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> list[dict[str, Any]]:
  """Runs `config.rounds` rounds; writes metrics.jsonl, TensorBoard events, checkpoints.

  A workdir with checkpoints resumes after the newest readable one, and the run then
  writes the same metrics as one that never stopped.
  """
  distributed.initialize_from_env()  # multi-process when FEDJAX_COORDINATOR_ADDRESS is set
  for module in filter(None, (m.strip() for m in config.imports.split(","))):
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ConfigError(f"config.imports: cannot import {module!r} ({e}); put it on "
                        f"PYTHONPATH or fix the name.") from e
  validate_config(config)
  try:  # Stage names and arguments are checked before any data is read.
    build_aggregator(config)
  except ValueError as e:
    raise ConfigError(f"config.aggregator / stages / error_feedback / client_state_dtype: "
                      f"{e}") from e
  try:
    build_broadcast(config)
  except ValueError as e:
    raise ConfigError(f"config.broadcast_stages: {e}") from e
  train, test = load_data(config)
  if config.clients_per_round > len(train.client_ids):
    raise ConfigError(f"config.clients_per_round={config.clients_per_round} exceeds the "
                      f"{len(train.client_ids)} training clients of {train.source}.")
  model = models.create_model(config.model, train.num_classes, train.example_shape)
  process = build_process(config, model, train.client_ids)
  evaluate = learning.evaluator(model)
  test_batches = pipeline.eval_batches(test, batch_size=config.eval_batch_size)

  _prepare_workdir(config, workdir, allow_config_change)
  # TensorBoard only: the console gets the progress line, not every scalar.
  writer = (metric_writers.SummaryWriter(workdir) if jax.process_index() == 0
            else metric_writers.MultiWriter([]))
  root = jax.random.key(config.seed)
  state = process.init(jax.random.fold_in(root, 0))
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  first_round, state, totals, history = _resume(checkpointer, state, workdir)
  progress = ProgressLine(config.rounds, config.log_every)
  compiles_before = execution.compile_count()
  def round_batch(r):
    ids = pipeline.sample_clients(train.client_ids, config.clients_per_round, seed=config.seed,
                                  round_num=r)
    return pipeline.round_batch(train, ids, batch_size=config.batch_size, epochs=config.epochs,
                                seed=config.seed, round_num=r, shuffle=config.shuffle)

  rounds = range(first_round, config.rounds + 1)
  with open(os.path.join(workdir, METRICS_FILE), "a") as log:
    start = time.perf_counter()
    for r, batch in zip(rounds, prefetched(round_batch, rounds)):
      state, metrics = process.next(state, batch, jax.random.fold_in(root, r))
      if not bool(_all_finite(state.params)):
        raise NonFiniteModelError(
            f"round {r}: the global model has NaN or Inf values, so the run stops here. The "
            f"last good checkpoint in {workdir}/checkpoints is intact. Lower the learning "
            f"rates, or add zeroing/clipping (--config.zeroing=True --config.clipping=True).")
      for name in totals:
        totals[name] += metrics[f"round_{name}"]
      record = {"round": r, **metrics, **totals, "round_seconds": time.perf_counter() - start}
      record["compiles"] = execution.compile_count() - compiles_before  # this run, cumulative
      if r % config.eval_every == 0 or r == config.rounds:
        record.update({f"eval/{k}": v for k, v in evaluate(state.params, test_batches).items()})
      log.write(json.dumps(record) + "\n")
      log.flush()
      if config.checkpoint_every and (r % config.checkpoint_every == 0 or r == config.rounds):
        checkpointer.save(r, state, {"totals": totals})
      writer.write_scalars(r, {k: v for k, v in record.items() if k != "round"})
      progress(record)
      history.append(record)
      start = time.perf_counter()
  checkpointer.close()
  writer.flush()
  writer.close()
  return history


# Keys that may change between the runs of one workdir: they do not change its results.
RESUMABLE_CHANGES = ("rounds", "log_every", "checkpoint_every", "keep_checkpoints",
                      "client_threads")


def _prepare_workdir(config, workdir: str, allow_config_change: bool) -> None:
  """Creates `workdir`; refuses a workdir whose run had another config, unless allowed."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path) and not allow_config_change:
    with open(path) as f:
      before = json.load(f)
    now = json.loads(config.to_json_best_effort())
    defaults = json.loads(default_config.get_config().to_json_best_effort())
    # A key added since that run, at its default, is the behaviour that run had.
    added_at_default = lambda k: k not in before and k in defaults and now.get(k) == defaults[k]
    changed = sorted(k for k in set(before) | set(now)
                     if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES
                     and not added_at_default(k))
    if changed:
      raise ConfigError(
          f"{workdir} holds a run with a different config ({', '.join(f'{k}: {before.get(k)!r} -> {now.get(k)!r}' for k in changed)}). "
          f"Use another --workdir, or pass --allow_config_change to resume it anyway.")
  with open(path, "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def _resume(checkpointer: Checkpointer, state, workdir: str):
  """(first round to run, state, totals, history) from the newest readable checkpoint."""
  totals = {"broadcasted_bits": 0, "aggregated_bits": 0, "update_bits": 0}
  restored = checkpointer.restore_latest(state)
  done = 0
  if restored is not None:
    done, state, meta = restored
    totals = meta["totals"]
    print(f"Resuming {workdir} after round {done}.", flush=True)
  history = _truncate_metrics(os.path.join(workdir, METRICS_FILE), done)
  return done + 1, state, totals, history


def _truncate_metrics(path: str, last_round: int) -> list[dict[str, Any]]:
  """Keeps the records of rounds <= last_round: later ones are recomputed identically."""
  kept = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
          break
        if record["round"] > last_round:
          break
        kept.append(record)
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  return kept
