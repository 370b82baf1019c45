"""What folding one client into a round costs the server's thread: `Aggregator.accumulate`.

  python -m benchmarks.fold_cost --json=benchmarks/fold_cost.json
  taskset -c 0 python -m benchmarks.fold_cost --json=benchmarks/fold_cost_one_core.json

One FedAvg CNN update (62 classes, 1,690,046 values), folded by `sequential` one client
at a time (a jitted `accumulate`, partial result donated), for `mean()`, TFF's
`compression_aggregator()` (8-bit stochastic quantization of the three large tensors),
a randomized Hadamard rotation before 2-bit quantization, `lloyd_max(2)`, `eden(2)` and
`rand_k` (1%); the stages draw their noise (rounding, rotation signs) with
`compression.prng`. (Earlier versions also timed the rounding and rotation folds with
`jax.random`'s noise, by patching a private switch of `prng`: see git history.)

Then the pieces, each against its earlier form in the same run:
- the noise alone: one uniform per value of the quantized tensors;
- the Walsh-Hadamard transform of those values padded to 2^21, `hadamard.fwht` (the
  same values, checked);
- `rand_k`'s indices into the dense kernel (1%): top-k of random keys against the full
  permutation drawn before (a different draw of the same distribution);
- the nearest of 4, 32 and 64 Gaussian levels (Lloyd-Max, EDEN) for each quantized
  value, comparing it with every midpoint and by binary search (`jnp.searchsorted`'s
  "compare_all" and "scan"; the same indices, checked); `lloyd_max.nearest_level` picks one
  by the number of midpoints, and searched before.

Prints the table; `--json` writes the records. Results: benchmarks/RESULTS.md, "Fold cost".
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import cli
from fedjax_compress import aggregators, compression, models
from fedjax_compress.aggregators import Clients
from fedjax_compress.compression import prng
from fedjax_compress.compression.hadamard import fwht, padded_size
from fedjax_compress.compression.indices import num_kept
from fedjax_compress.compression.lloyd_max import gaussian_levels, nearest_level
from fedjax_compress.compression.rand_k import random_indices

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_integer("repeats", 7, "Timings per variant; the median is reported.", lower_bound=1)
flags.DEFINE_integer("calls", 10, "Calls per timing.", lower_bound=1)


def fwht_rank_k(x):
  """`hadamard.fwht` as it was: the same levels on a [2, 2, ..., 2] view."""
  k = x.shape[0].bit_length() - 1
  x = x.reshape((2,) * k)
  for axis in range(k):
    a, b = jnp.take(x, 0, axis=axis), jnp.take(x, 1, axis=axis)
    x = jnp.stack([a + b, a - b], axis=axis)
  return x.reshape(-1)


def compiled_fold(aggregator, update):
  """A jitted fold of one client (at cohort position 3 of 1000) into a partial result."""
  state = aggregator.init(jax.tree.map(lambda x: x[0], update))
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), update)
  weights = jnp.ones((1,), jnp.float32)
  clients = Clients(jnp.asarray([3], jnp.int32))
  fold = jax.jit(
    lambda partial, update: aggregator.accumulate(
      state, partial, update, weights, clients, jax.random.key(7)
    )[0],
    donate_argnums=0,
  )
  start = lambda: aggregator.start(state, spec, 1000)
  return fold.lower(start(), update).compile(), start


def median_ms(run) -> float:
  run()
  times = []
  for _ in range(FLAGS.repeats):
    begin = time.perf_counter()
    for _ in range(FLAGS.calls):
      out = run()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - begin) / FLAGS.calls * 1e3)
  return statistics.median(times)


def time_fold(fold, start, update) -> tuple[float, object]:
  partial = [start()]

  def run():
    partial[0] = fold(partial[0], update)
    return partial[0]

  return median_ms(run), run()


def record(name: str, run, cores: int, **extra) -> dict:
  return {"variant": name, "ms_per_client": median_ms(run), "cores": cores, **extra}


def fold_records(update, cores: int) -> list[dict]:
  """Each aggregator's fold."""
  encoded = lambda stage: aggregators.encoded_mean(stage, threshold=20_000)
  variants = {
    "mean()": aggregators.float32_mean(),
    "compression_aggregator()": aggregators.compression_aggregator(),
    "hadamard, 2 bits": encoded(
      compression.chain(compression.hadamard(), compression.uniform_quantize(bits=2))
    ),
    "lloyd_max(2)": encoded(compression.lloyd_max(2)),
    "eden(2)": encoded(compression.eden(2)),
    "rand_k(fraction=0.01)": encoded(compression.rand_k(fraction=0.01)),
  }
  records = []
  for name, aggregator in variants.items():
    fold, start = compiled_fold(aggregator, update)
    ms, _ = time_fold(fold, start, update)
    records.append({"variant": name, "ms_per_client": ms, "cores": cores})
  return records


def piece_records(quantized: int, dense: int, cores: int) -> tuple[list[dict], bool]:
  """The noise, the transform, rand_k's indices and the nearest level, each against its
  earlier form; whether the forms that should agree do."""
  key = jax.random.key(2)
  records, same = [], True
  draw: Callable[..., jax.Array]  # the noise draws, then rand_k's index draws
  for name, draw in (
    ("noise: prng.uniform", prng.uniform),
    ("noise: jax.random.uniform", jax.random.uniform),
  ):
    f = jax.jit(lambda k, draw=draw: draw(k, (quantized,)))
    records.append(record(name, lambda f=f: f(key), cores, values=quantized))

  padded = padded_size(quantized)
  x = jax.random.normal(key, (padded,))
  transforms = []
  for name, transform in (
    ("fwht: hadamard.fwht", fwht),
    ("fwht: rank-k view (before)", fwht_rank_k),
  ):
    f = jax.jit(transform)
    transforms.append(f(x))
    records.append(record(name, lambda f=f: f(x), cores, values=padded))
  same = same and np.array_equal(*transforms)

  kept = num_kept(dense, None, 0.01)
  for name, draw in (
    ("rand_k indices: rand_k.random_indices", random_indices),
    (
      "rand_k indices: jax.random.permutation (before)",
      lambda k, d, kept: jax.random.permutation(k, d)[:kept],
    ),
  ):
    f = jax.jit(lambda k, draw=draw: draw(k, dense, kept))
    records.append(record(name, lambda f=f: f(key), cores, values=dense))

  values = jax.random.normal(key, (quantized,))
  for bits in (2, 5, 6):
    levels = jnp.asarray(gaussian_levels(bits), jnp.float32)
    found = [jax.jit(nearest_level)(values, levels)]
    for method in ("compare_all", "scan"):
      f = jax.jit(
        lambda v, levels, method=method: jnp.searchsorted(
          (levels[1:] + levels[:-1]) / 2, v, method=method
        )
      )
      found.append(f(values, levels))
      records.append(
        record(
          f"nearest of {2**bits} levels: {method}",
          lambda f=f: f(values, levels),
          cores,
          values=quantized,
        )
      )
    same = same and all(np.array_equal(found[0], other) for other in found[1:])
  return records, same


def main(argv):
  del argv
  cli.check_json_path(FLAGS.json)
  model = models.create_model("cnn", 62)
  params = model.init(jax.random.key(0))
  update = jax.tree.map(
    lambda x: 0.01 * jax.random.normal(jax.random.key(1), (1,) + x.shape), params
  )
  cores = len(os.sched_getaffinity(0))
  records = fold_records(update, cores)
  quantized = sum(x.size for x in jax.tree.leaves(params) if x.size > 20_000)
  pieces, same = piece_records(quantized, params["Dense_0"]["kernel"].size, cores)
  records += pieces
  print(
    f"One CNN client (62 classes) folded into a round, {cores} core(s); transforms and "
    f"level searches with either form equal: {same}\n"
  )
  print(f"{'variant':48s} {'ms per client':>14s}")
  for r in records:
    r["same_results"] = same
    print(f"{r['variant']:48s} {r['ms_per_client']:14.2f}")
  cli.write_json(FLAGS.json, records, indent=1)
  if not same:
    raise SystemExit("The two forms of the transform or level search disagreed.")


if __name__ == "__main__":
  app.run(main)
