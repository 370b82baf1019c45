"""Execution strategies: how the clients of a round are run. All compute the same thing.

- `vmap`: every client at once, batches under `lax.scan`; one program with the server
  step. The strategy for GPU/TPU.
- `chunked`: `vmap` over chunks of `chunk_size` clients, chunks in sequence.
- `sharded`: clients sharded over a device mesh (all devices of all processes), the
  round one jitted program with collective sums (see `sharding`). The strategy for
  several devices and for multi-process runs.
- `sequential`: a Python loop over clients and their non-empty batches, each step one
  jitted call. On XLA:CPU this is the fastest: convolutions inside `lax.scan` ran 9-12x
  slower per step and a `vmap` over 10 clients 5.3-5.7x slower per client-step than this
  loop (benchmarks/RESULTS.md, `python -m benchmarks.step_forms`).

Memory. `sequential` and `chunked` stream `fed_avg`'s default aggregator (the weighted
float32 mean): each client or chunk is added to running `ClientSums` as it finishes, so
memory grows with the chunk, not the cohort. An explicit `Aggregator` takes all client
updates stacked ([clients, ...]: 6.6 MB per CNN client, held about three times).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.aggregators.core import sum_over_clients
from fedjax_compress.learning.client import ClientOutput, ClientTrainer

STRATEGIES = ("auto", "sequential", "vmap", "chunked", "sharded")


def resolve(strategy: str, backend: str | None = None, device_count: int | None = None,
            process_count: int | None = None) -> str:
  """`auto`: `sharded` multi-process or on several GPUs/TPUs, else `sequential` on CPU
  and `vmap` elsewhere."""
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown execution strategy {strategy!r}; valid: {STRATEGIES}.")
  if strategy != "auto":
    return strategy
  backend = backend or jax.default_backend()
  device_count = jax.device_count() if device_count is None else device_count
  process_count = jax.process_count() if process_count is None else process_count
  if process_count > 1 or (backend != "cpu" and device_count > 1):
    return "sharded"
  return "sequential" if backend == "cpu" else "vmap"


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


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class ClientSums(NamedTuple):
  """Running sums over clients for the streamed weighted mean (the default aggregator)."""
  weighted_delta: Any  # sum_c w_c * delta_c
  weight: jax.Array  # sum_c w_c
  metrics: dict[str, jax.Array]  # sums of the clients' metric sums


def client_weights(outputs: ClientOutput, uniform: bool) -> jax.Array:
  """The clients' aggregation weights: examples trained on, or 1 each."""
  return jnp.ones_like(outputs.num_examples) if uniform else outputs.num_examples


def add_clients(sums: ClientSums, outputs: ClientOutput, uniform: bool) -> ClientSums:
  """Adds a stack of clients' outputs to `sums` (traceable)."""
  w = client_weights(outputs, uniform)
  return ClientSums(
      jax.tree.map(lambda s, d: s + sum_over_clients(d, w), sums.weighted_delta, outputs.delta),
      sums.weight + jnp.sum(w),
      jax.tree.map(lambda s, m: s + jnp.sum(m), sums.metrics, outputs.metrics))


def _zero_sums(trainer: ClientTrainer, global_params) -> ClientSums:
  metrics = jax.eval_shape(trainer.init, global_params)[-1]
  return ClientSums(jax.tree.map(jnp.zeros_like, global_params), jnp.zeros((), jnp.float32),
                    jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics))


def _one(outputs: ClientOutput) -> ClientOutput:
  return jax.tree.map(lambda a: a[None], outputs)


class SequentialClients:
  """Runs clients one at a time, one jitted call per non-empty batch.

  With `stream_weighting` ("uniform" or "num_examples"), each client's output is added
  to running `ClientSums` as soon as it is done, so memory does not grow with the cohort.
  """

  def __init__(self, trainer: ClientTrainer, stream_weighting: str | None = None):
    self._init = jax.jit(trainer.init)
    # No buffer donation: on XLA:CPU it made each step ~6% slower (benchmarks/RESULTS.md).
    self._step = jax.jit(_keyed_step(trainer))
    # One pass over all clients' final states: stacking fused with computing the deltas.
    self._finalize_all = jax.jit(
        lambda carries, global_params: jax.vmap(trainer.finalize, (0, None))(
            _stack(carries), global_params))
    self._streaming = stream_weighting is not None
    if self._streaming:
      uniform = stream_weighting == "uniform"
      self._zero = jax.jit(lambda g: _zero_sums(trainer, g))
      self._add = jax.jit(lambda sums, carry, g: add_clients(
          sums, _one(trainer.finalize(carry, g)), uniform), donate_argnums=0)

  def __call__(self, global_params, x, y, mask, client_keys) -> ClientOutput | ClientSums:
    active = np.asarray(mask).any(axis=-1)
    start = self._init(global_params)
    carries = []
    sums = self._zero(global_params) if self._streaming else None
    for c in range(x.shape[0]):
      carry = start
      for b in np.flatnonzero(active[c]):
        carry = self._step(carry, global_params, x[c, b], y[c, b], mask[c, b], client_keys[c],
                           np.int32(b))
      if self._streaming:
        sums = self._add(sums, carry, global_params)
      else:
        carries.append(carry)
    return sums if self._streaming else self._finalize_all(carries, global_params)


class ChunkedClients:
  """`vmap` over chunks of clients, the chunks one after another.

  With `stream_weighting`, each chunk is added to running `ClientSums` in the same
  jitted call that trains it: memory grows with the chunk, not the cohort.
  """

  def __init__(self, trainer: ClientTrainer, chunk_size: int,
               stream_weighting: str | None = None):
    if chunk_size <= 0:
      raise ValueError(f"chunk_size={chunk_size} must be positive.")
    self._chunk_size = chunk_size
    self._run = jax.jit(lambda *args: vmap_clients(trainer, *args))
    self._concatenate = jax.jit(lambda chunks: jax.tree.map(lambda *xs: jnp.concatenate(xs), *chunks))
    self._streaming = stream_weighting is not None
    if self._streaming:
      uniform = stream_weighting == "uniform"
      self._zero = jax.jit(lambda g: _zero_sums(trainer, g))
      self._run_and_add = jax.jit(
          lambda sums, *args: add_clients(sums, vmap_clients(trainer, *args), uniform),
          donate_argnums=0)

  def __call__(self, global_params, x, y, mask, client_keys) -> ClientOutput | ClientSums:
    chunks = []
    sums = self._zero(global_params) if self._streaming else None
    for start in range(0, x.shape[0], self._chunk_size):
      part = slice(start, start + self._chunk_size)
      args = (global_params, x[part], y[part], mask[part], client_keys[part])
      if self._streaming:
        sums = self._run_and_add(sums, *args)
      else:
        chunks.append(self._run(*args))
    return sums if self._streaming else self._concatenate(chunks)


def client_runner(trainer: ClientTrainer, strategy: str, chunk_size: int,
                  stream_weighting: str | None = None) -> Callable:
  """The host-side runner of a split strategy (`sequential` or `chunked`).

  `runner(global_params, x, y, mask, client_keys)` returns the stacked `ClientOutput`,
  or with `stream_weighting` ("uniform" or "num_examples") the `ClientSums`.
  """
  if strategy == "sequential":
    return SequentialClients(trainer, stream_weighting)
  if strategy == "chunked":
    return ChunkedClients(trainer, chunk_size, stream_weighting)
  raise ValueError(f"{strategy!r} is not a split strategy.")
