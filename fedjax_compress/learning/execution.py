"""Execution strategies: how the clients of a round are run. All compute the same thing.

- `vmap`: every client at once, batches under `lax.scan`; one program with the server
  step. The strategy for GPU/TPU.
- `chunked`: `vmap` over chunks of `chunk_size` clients, chunks in sequence; memory grows
  with the chunk, not the cohort.
- `sequential`: a Python loop over clients and their non-empty batches, each step one
  jitted call. On XLA:CPU this is the fastest: convolutions inside `lax.scan` ran about
  12x slower per step and a `vmap` over 10 clients about 5.7x slower per client-step
  than this loop (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.learning.client import ClientOutput, ClientTrainer

STRATEGIES = ("auto", "sequential", "vmap", "chunked")


def resolve(strategy: str, backend: str | None = None) -> str:
  """`auto` picks `sequential` on CPU and `vmap` elsewhere."""
  if strategy not in STRATEGIES:
    raise ValueError(f"Unknown execution strategy {strategy!r}; valid: {STRATEGIES}.")
  if strategy != "auto":
    return strategy
  return "sequential" if (backend or jax.default_backend()) == "cpu" else "vmap"


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


class SequentialClients:
  """Runs clients one at a time, one jitted call per non-empty batch."""

  def __init__(self, trainer: ClientTrainer):
    self._init = jax.jit(trainer.init)
    # No buffer donation: on XLA:CPU it made each step ~6% slower (benchmarks/RESULTS.md).
    self._step = jax.jit(_keyed_step(trainer))
    # One pass over all clients' final states: stacking fused with computing the deltas.
    self._finalize_all = jax.jit(
        lambda carries, global_params: jax.vmap(trainer.finalize, (0, None))(
            _stack(carries), global_params))

  def __call__(self, global_params, x, y, mask, client_keys) -> ClientOutput:
    active = np.asarray(mask).any(axis=-1)
    start = self._init(global_params)
    carries = []
    for c in range(x.shape[0]):
      carry = start
      for b in np.flatnonzero(active[c]):
        carry = self._step(carry, global_params, x[c, b], y[c, b], mask[c, b], client_keys[c],
                           np.int32(b))
      carries.append(carry)
    return self._finalize_all(carries, global_params)


class ChunkedClients:
  """`vmap` over chunks of clients, the chunks one after another."""

  def __init__(self, trainer: ClientTrainer, chunk_size: int):
    if chunk_size <= 0:
      raise ValueError(f"chunk_size={chunk_size} must be positive.")
    self._chunk_size = chunk_size
    self._run = jax.jit(lambda *args: vmap_clients(trainer, *args))
    self._concatenate = jax.jit(lambda chunks: jax.tree.map(lambda *xs: jnp.concatenate(xs), *chunks))

  def __call__(self, global_params, x, y, mask, client_keys) -> ClientOutput:
    chunks = []
    for start in range(0, x.shape[0], self._chunk_size):
      part = slice(start, start + self._chunk_size)
      chunks.append(self._run(global_params, x[part], y[part], mask[part], client_keys[part]))
    return self._concatenate(chunks)


def client_runner(trainer: ClientTrainer, strategy: str, chunk_size: int) -> Callable:
  """The host-side runner of a split strategy (`sequential` or `chunked`).

  `runner(global_params, x, y, mask, client_keys)` returns the stacked `ClientOutput`.
  """
  if strategy == "sequential":
    return SequentialClients(trainer)
  if strategy == "chunked":
    return ChunkedClients(trainer, chunk_size)
  raise ValueError(f"{strategy!r} is not a split strategy.")
