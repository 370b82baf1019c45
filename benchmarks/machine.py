"""The machine's achievable FLOP rate, the yardstick of the benchmarks' efficiency figures."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  """float32 n x n by n x n `jnp.dot` at default precision (the convolutions' too): the
  machine's achievable FLOP rate, median of runs."""
  a = jnp.asarray(np.random.default_rng(0).random((n, n), dtype=np.float32))
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / statistics.median(times) / 1e9
