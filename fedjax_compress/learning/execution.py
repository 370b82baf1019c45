"""Execution strategies: how the clients of a round are run. All compute the same thing.

- `vmap`: every client at once, batches under `lax.scan`; one program with the server
  step.
- `chunked`: `vmap` over chunks of `chunk_size` clients, chunks in sequence, each chunk
  halved until it fits the device's memory. The strategy for one GPU/TPU: on an H100 a
  `vmap` over all of 1000 CNN clients ran a round slower than chunks of 128
  (`bash benchmarks/gpu.sh`; benchmarks/RESULTS.md, "One GPU").
- `sharded`: clients sharded over a device mesh (all devices of all processes), the
  round one jitted program with collective sums (see `sharding`). The strategy for
  several devices and for multi-process runs.
- `sequential`: a Python loop over each client's non-empty batches, each step one
  jitted call, `client_threads` clients at once on host threads. The strategy for CPU:
  there convolutions inside `lax.scan`, and grouped convolutions under `vmap`, ran
  several times slower than a plain loop of a jitted step, and two clients on two
  threads ran a round faster than it (`python -m benchmarks.round_speed`;
  benchmarks/RESULTS.md, "Round speed on CPU" and "Step forms").

Memory. `sequential` and `chunked` stream the round: each client or chunk is folded into
the aggregator's partial result as it finishes (`Aggregator.accumulate`), so memory grows
with the chunk, not the cohort, whatever the aggregator. `vmap` and `sharded` hold every
client's update at once ([clients, ...]: 6.6 MB per CNN client).
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, cast

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.learning.client import ClientOutput, ClientTrainer

STRATEGIES = ("auto", "sequential", "vmap", "chunked", "sharded")
# The chunk of `auto` on one GPU/TPU: on an H100, chunks of 32-192 CNN clients ran a
# round of 1000 about equally fast (128 the fastest run), chunks of 256 and one `vmap`
# of all several times slower (`bash benchmarks/gpu.sh`; benchmarks/RESULTS.md, "One GPU").
AUTO_CHUNK_SIZE = 128


def resolve(
  strategy: str,
  backend: str | None = None,
  device_count: int | None = None,
  process_count: int | None = None,
) -> str:
  """`auto`: `sharded` multi-process or on several GPUs/TPUs, else `sequential` on CPU
  and `chunked` on one GPU/TPU (chunks of `AUTO_CHUNK_SIZE` clients, or of the whole
  cohort when it is smaller, halved until they fit the device's memory)."""
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown execution strategy {strategy!r}; valid: {STRATEGIES}.")
  if strategy != "auto":
    return strategy
  backend = backend or jax.default_backend()
  device_count = jax.device_count() if device_count is None else device_count
  process_count = jax.process_count() if process_count is None else process_count
  if process_count > 1 or (backend != "cpu" and device_count > 1):
    return "sharded"
  return "sequential" if backend == "cpu" else "chunked"


def resolve_chunk_size(strategy: str, chunk_size: int) -> int:
  """The chunk size `strategy` runs with: `AUTO_CHUNK_SIZE` where `auto` chose
  `chunked`, else `chunk_size`."""
  return AUTO_CHUNK_SIZE if strategy == "auto" and resolve(strategy) == "chunked" else chunk_size


_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = {"count": 0, "listening": False}


def compile_count() -> int:
  """XLA compilations in this process since the first call (listens from then on).

  Counts backend compilations (cache hits of jitted functions are not compilations).
  """
  if not _compiles["listening"]:

    def listener(event, duration_secs, **kwargs):
      del duration_secs, kwargs
      if event == _COMPILE_EVENT:
        _compiles["count"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    _compiles["listening"] = True
  return _compiles["count"]


def _keyed_step(trainer: ClientTrainer):
  def step(carry, global_params, x, y, mask, client_key, index):
    return trainer.step(carry, global_params, x, y, mask, jax.random.fold_in(client_key, index))

  return step


def vmap_clients(trainer: ClientTrainer, global_params, x, y, mask, client_keys) -> ClientOutput:
  """All clients under `vmap`, each scanning its batches; traceable (use inside `jit`)."""
  step = _keyed_step(trainer)

  def one_client(x, y, mask, key):
    def body(carry, batch):
      index, xb, yb, mb = batch
      return step(carry, global_params, xb, yb, mb, key, index), None

    indices = jnp.arange(x.shape[0])
    carry, _ = jax.lax.scan(body, trainer.init(global_params), (indices, x, y, mask))
    return trainer.finalize(carry, global_params)

  return jax.vmap(one_client)(x, y, mask, client_keys)


def _one(outputs: ClientOutput) -> ClientOutput:
  return jax.tree.map(lambda a: a[None], outputs)


# `add(acc, context, outputs, index) -> acc` folds a chunk of clients' outputs (leading
# axis: clients at cohort positions `index`) into a round's running results; `context`
# is read-only (the aggregator's state, the round's key).
AddClients = Callable[[Any, Any, ClientOutput, jax.Array], Any]


class SequentialClients:
  """Runs clients one jitted call per non-empty batch, on `threads` host threads.

  Each client's steps are a loop of one jitted step, as in a plain training loop. With
  `threads > 1`, that many clients train at once, each on its own host thread (jitted
  calls release the GIL), which uses the cores that one convolution step leaves idle.
  Either way each client computes exactly what it computes alone, and the clients are
  folded into the round's running results (`add`) one at a time in cohort order, so
  the results do not depend on `threads` (tested bit for bit). Memory: at most
  `2 * threads` clients' states are alive at once, not the cohort's.
  """

  def __init__(self, trainer: ClientTrainer, add: AddClients, threads: int = 1):
    if threads < 1:
      raise ValueError(f"threads={threads} must be >= 1.")
    self._threads = threads
    self._init = jax.jit(trainer.init)
    # No buffer donation for the step: on XLA:CPU it did not pay across the CNN's forms
    # (benchmarks/RESULTS.md, "Step forms"). The running results are donated: updated
    # in place.
    self._step = jax.jit(_keyed_step(trainer))
    self._add = jax.jit(
      lambda acc, context, carry, g, index: add(
        acc, context, _one(trainer.finalize(carry, g)), index
      ),
      donate_argnums=0,
    )

  def _train(self, start, global_params, x, y, mask, key, batches):
    carry = start
    for b in batches:
      carry = self._step(carry, global_params, x[b], y[b], mask[b], key, np.int32(b))
    return carry

  def __call__(self, acc, context, global_params, x, y, mask, client_keys):
    active = cast(np.ndarray, np.asarray(mask).any(axis=-1))  # [clients, batches]
    start = self._init(global_params)
    train = lambda c: self._train(
      start, global_params, x[c], y[c], mask[c], client_keys[c], np.flatnonzero(active[c])
    )
    fold = lambda acc, c, carry: self._add(
      acc, context, carry, global_params, np.asarray([c], np.int32)
    )
    if self._threads == 1:
      for c in range(x.shape[0]):
        acc = fold(acc, c, train(c))
      return acc
    # A thread finishes its client before taking the next: the window then bounds the
    # clients in flight.
    train_to_end = lambda c: jax.block_until_ready(train(c))
    with ThreadPoolExecutor(self._threads, thread_name_prefix="client") as pool:
      # A window of 2 * threads clients in flight keeps every thread busy while the
      # main thread folds finished clients in order.
      pending: deque[tuple[int, Future]] = deque()
      for c in range(x.shape[0]):
        pending.append((c, pool.submit(train_to_end, c)))
        if len(pending) == 2 * self._threads:
          done, carry = pending.popleft()
          acc = fold(acc, done, carry.result())
      for done, carry in pending:
        acc = fold(acc, done, carry.result())
    return acc


def program_bytes(jitted, *args) -> int:
  """Device memory of `jitted`'s program for `args` at its peak: arguments, outputs,
  temporaries (XLA's memory analysis). Compiling here is no waste: `jitted` reuses the
  compilation when it is called with such arguments."""
  m = jitted.lower(*args).compile().memory_analysis()
  return (
    m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  )


def device_memory_budget(fraction: float = 0.9) -> int | None:
  """`fraction` of the default device's free memory, in bytes; None where the backend
  reports no memory (XLA:CPU)."""
  stats = jax.local_devices()[0].memory_stats()
  if not stats or "bytes_limit" not in stats:
    return None
  return int(fraction * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))


class ChunkedClients:
  """`vmap` over chunks of clients, the chunks one after another.

  Each chunk is folded into the round's running results in the same jitted call that
  trains it: memory grows with the chunk, not the cohort. A chunk holds
  `min(chunk_size, cohort)` clients, halved until its compiled program fits
  `memory_budget` bytes (XLA's own memory analysis; None: no limit). The choice is made
  once per cohort shape and kept in `chunk_sizes`.
  """

  def __init__(
    self, trainer: ClientTrainer, add: AddClients, chunk_size: int, memory_budget: int | None = None
  ):
    if chunk_size <= 0:
      raise ValueError(f"chunk_size={chunk_size} must be positive.")
    self._chunk_size = chunk_size
    self._memory_budget = memory_budget
    self.chunk_sizes: dict[tuple, int] = {}
    self._run_and_add = jax.jit(
      lambda acc, context, g, x, y, mask, keys, index: add(
        acc, context, vmap_clients(trainer, g, x, y, mask, keys), index
      ),
      donate_argnums=0,
    )

  def chunk_bytes(self, args, size: int) -> int:
    """Device memory of the program that trains and folds a chunk of `size` clients;
    `args`: the runner's call arguments."""
    acc, context, global_params, x, y, mask, client_keys = args
    return program_bytes(
      self._run_and_add,
      acc,
      context,
      global_params,
      x[:size],
      y[:size],
      mask[:size],
      client_keys[:size],
      np.arange(size, dtype=np.int32),
    )

  def _chunk_for(self, args, cohort: int) -> int:
    """`min(chunk_size, cohort)`, halved until its program fits the budget."""
    size = min(self._chunk_size, cohort)
    if self._memory_budget is None:
      return size
    while (need := self.chunk_bytes(args, size)) > self._memory_budget:
      if size == 1:
        raise MemoryError(
          f"One client's training needs {need / 2**20:.1f} MiB of device memory, over the "
          f"budget of {self._memory_budget / 2**20:.1f} MiB: use a smaller batch size or "
          f"model, or give fed_avg a larger memory_budget_bytes."
        )
      size //= 2
    logging.info(
      "chunked: a cohort of %d clients in chunks of %d (%.1f of %.1f MiB).",
      cohort,
      size,
      need / 2**20,
      self._memory_budget / 2**20,
    )
    return size

  def __call__(self, acc, context, global_params, x, y, mask, client_keys):
    shape = x.shape
    if shape not in self.chunk_sizes:
      self.chunk_sizes[shape] = self._chunk_for(
        (acc, context, global_params, x, y, mask, client_keys), shape[0]
      )
    size = self.chunk_sizes[shape]
    for start in range(0, shape[0], size):
      part = slice(start, start + size)
      index = np.arange(start, min(start + size, shape[0]), dtype=np.int32)
      acc = self._run_and_add(
        acc, context, global_params, x[part], y[part], mask[part], client_keys[part], index
      )
    return acc


def client_weights(outputs: ClientOutput, uniform: bool) -> jax.Array:
  """The clients' aggregation weights: examples trained on, or 1 each."""
  return jnp.ones_like(outputs.num_examples) if uniform else outputs.num_examples


def client_runner(
  trainer: ClientTrainer,
  strategy: str,
  add: AddClients,
  chunk_size: int = 8,
  threads: int = 1,
  memory_budget: int | None = None,
) -> Callable:
  """The host-side runner of a split strategy (`sequential` or `chunked`).

  `runner(acc, context, global_params, x, y, mask, client_keys) -> acc` folds every
  client of the round into `acc` with `add`. `threads`: clients trained at once by
  `sequential`; `chunk_size`, `memory_budget`: see `ChunkedClients`.
  """
  if strategy == "sequential":
    return SequentialClients(trainer, add, threads)
  if strategy == "chunked":
    return ChunkedClients(trainer, add, chunk_size, memory_budget)
  raise ValueError(f"{strategy!r} is not a split strategy.")
