"""Round runners: each execution strategy as `run(state, batch, rows, key) -> (state,
metrics)`, built from the round's pure functions (`rounds.begin`, `fold`, `end`).

- `vmap_runner`: the whole round one jitted program (`rounds.whole_round`), every
  client under `vmap`; a cohort whose program does not fit the memory budget is a
  `MemoryError` that points to `chunked`.
- `split_runner`: `begin` and `end` jitted, the clients in between run on the host by a
  client runner (`execution.SequentialClients` or `ChunkedClients`) that folds them into
  the results as they finish.
- `sharding.sharded_round`: the whole round one program over a device mesh.

See `execution` for which strategy runs where and why.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from fedjax_compress.data.pipeline import RoundBatch
from fedjax_compress.learning import execution, sharding
from fedjax_compress.learning.client import ClientTrainer
from fedjax_compress.learning.rounds import RoundSetup, ServerState, begin, end, fold, whole_round

RoundRunner = Callable[
  [ServerState, RoundBatch, Any, jax.Array], tuple[ServerState, dict[str, jax.Array]]
]


def vmap_runner(
  setup: RoundSetup, trainer: ClientTrainer, memory_budget: int | None
) -> RoundRunner:
  """Every client under `vmap`, their batches under `lax.scan`, with the aggregator and
  the server step: one jitted program per round shape, checked once against
  `memory_budget` bytes (None: no check)."""

  @jax.jit
  def program(state, rows, key, x, y, mask):
    train = lambda received, keys: execution.vmap_clients(trainer, received, x, y, mask, keys)
    return whole_round(setup, state, rows, key, x.shape[0], train)

  checked_shapes = set()

  def run(state, batch, rows, key):
    args = (state, rows, key, batch.x, batch.y, batch.mask)
    if memory_budget is not None and batch.x.shape not in checked_shapes:
      need = execution.program_bytes(program, *args)
      if need > memory_budget:
        raise MemoryError(
          f"A vmap round of {batch.num_clients} clients needs {need / 2**20:.1f} MiB of "
          f"device memory, over the budget of {memory_budget / 2**20:.1f} MiB: use "
          f"strategy='chunked' (or 'auto'), or fewer clients per round."
        )
      checked_shapes.add(batch.x.shape)
    return program(*args)

  return run


def split_runner(setup: RoundSetup, clients: Callable) -> RoundRunner:
  """`begin` and `end` as jitted programs; `clients(results, context, received, x, y,
  mask, client_keys) -> results` trains and folds the cohort in between."""
  begin_round = jax.jit(functools.partial(begin, setup), static_argnums=3)
  end_round = jax.jit(functools.partial(end, setup))

  def run(state, batch, rows, key):
    start = begin_round(state, rows, key, batch.num_clients)
    results = clients(
      start.results, start.context, start.received, batch.x, batch.y, batch.mask, start.client_keys
    )
    return end_round(state, results, start.context, start.broadcast_bits)

  return run


def round_runner(
  setup: RoundSetup,
  trainer: ClientTrainer,
  strategy: str,
  *,
  chunk_size: int,
  client_threads: int,
  memory_budget: int | None,
) -> RoundRunner:
  """The runner of a resolved `strategy` (not "auto"; see `execution.resolve`)."""
  if strategy == "vmap":
    return vmap_runner(setup, trainer, memory_budget)
  if strategy == "sharded":
    return sharding.sharded_round(
      trainer, functools.partial(whole_round, setup), sharding.client_mesh()
    )
  clients = execution.client_runner(
    trainer, strategy, functools.partial(fold, setup), chunk_size, client_threads, memory_budget
  )
  return split_runner(setup, clients)
