"""What folding one client into a round costs the server's thread: `Aggregator.accumulate`.

  python -m benchmarks.fold_cost --json=benchmarks/fold_cost.json
  taskset -c 0 python -m benchmarks.fold_cost --json=benchmarks/fold_cost_one_core.json

One FedAvg CNN update (62 classes, 1,690,046 values), folded by `sequential` one client
at a time (a jitted `accumulate`, partial result donated), for `mean()`, TFF's
`compression_aggregator()` (8-bit stochastic quantization of the three large tensors),
a randomized Hadamard rotation before 2-bit quantization, `lloyd_max(2)`, `eden(2)` and
`rand_k` (1%). The rounding and rotation folds are timed twice in the same run:
drawing their noise (rounding, rotation signs) with `aggregators.prng` (what the stages
use) and with `jax.random` (as before `prng`; the same values, checked).

Then the pieces, each against its earlier form in the same run:
- the noise alone: one uniform per value of the quantized tensors;
- the Walsh-Hadamard transform of those values padded to 2^21, `rotation.fwht` (the
  same values, checked);
- `rand_k`'s indices into the dense kernel (1%): top-k of random keys against the full
  permutation drawn before (a different draw of the same distribution);
- the nearest of 4, 32 and 64 Gaussian levels (Lloyd-Max, EDEN) for each quantized
  value, comparing it with every midpoint and by binary search (`jnp.searchsorted`'s
  "compare_all" and "scan"; the same indices, checked); `lloyd.nearest_level` picks one
  by the number of midpoints, and searched before.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import cli
from fedjax_compress import aggregators, models
from fedjax_compress.aggregators import lloyd, prng, rotation, sparsify
from fedjax_compress.aggregators.core import Clients

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_integer("repeats", 7, "Timings per variant; the median is reported.",
                     lower_bound=1)
flags.DEFINE_integer("calls", 10, "Calls per timing.", lower_bound=1)


def fwht_rank_k(x):
  """`rotation.fwht` as it was: the same levels on a [2, 2, ..., 2] view."""
  k = x.shape[0].bit_length() - 1
  x = x.reshape((2,) * k)
  for axis in range(k):
    a, b = jnp.take(x, 0, axis=axis), jnp.take(x, 1, axis=axis)
    x = jnp.stack([a + b, a - b], axis=axis)
  return x.reshape(-1)


@contextlib.contextmanager
def jax_random():
  """While tracing, `prng` calls `jax.random` as it does off CPU: the stages as before."""
  fast = prng._fast  # pylint: disable=protected-access
  prng._fast = lambda key, shape: False  # pylint: disable=protected-access
  try:
    yield
  finally:
    prng._fast = fast  # pylint: disable=protected-access


def compiled_fold(aggregator, update):
  """A jitted fold of one client (at cohort position 3 of 1000) into a partial result."""
  state = aggregator.init(jax.tree.map(lambda x: x[0], update))
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), update)
  weights = jnp.ones((1,), jnp.float32)
  clients = Clients(jnp.asarray([3], jnp.int32))
  fold = jax.jit(lambda partial, update: aggregator.accumulate(
      state, partial, update, weights, clients, jax.random.key(7))[0], donate_argnums=0)
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


def fold_records(update, cores: int) -> tuple[list[dict], bool]:
  """Each aggregator's fold; whether the folds with either noise agree."""
  rotated = lambda: aggregators.encoded_mean(
      aggregators.chain(aggregators.hadamard(), aggregators.uniform_quantize(bits=2)),
      threshold=20_000)
  encoded = lambda stage: aggregators.encoded_mean(stage, threshold=20_000)
  same_noise = contextlib.nullcontext
  variants = {"mean()": (aggregators.mean(), same_noise),
              "compression_aggregator()": (aggregators.compression_aggregator(), same_noise),
              "compression_aggregator(), jax.random.uniform": (
                  aggregators.compression_aggregator(), jax_random),
              "hadamard, 2 bits": (rotated(), same_noise),
              "hadamard, 2 bits, jax.random.uniform": (rotated(), jax_random),
              "lloyd_max(2)": (encoded(lloyd.lloyd_max(2)), same_noise),
              "eden(2)": (encoded(aggregators.eden(2)), same_noise),
              "rand_k(fraction=0.01)": (encoded(aggregators.rand_k(fraction=0.01)), same_noise)}
  records, results = [], {}
  for name, (aggregator, noise) in variants.items():
    with noise():
      fold, start = compiled_fold(aggregator, update)
    ms, results[name] = time_fold(fold, start, update)
    records.append({"variant": name, "ms_per_client": ms, "cores": cores})
  same = all(np.array_equal(a, b) for name in ("compression_aggregator()", "hadamard, 2 bits")
             for a, b in zip(jax.tree.leaves(results[name]),
                             jax.tree.leaves(results[f"{name}, jax.random.uniform"])))
  return records, same


def piece_records(quantized: int, dense: int, cores: int) -> tuple[list[dict], bool]:
  """The noise, the transform, rand_k's indices and the nearest level, each against its
  earlier form; whether the forms that should agree do."""
  key = jax.random.key(2)
  records, same = [], True
  for name, draw in (("noise: prng.uniform", prng.uniform),
                     ("noise: jax.random.uniform", jax.random.uniform)):
    f = jax.jit(lambda k, draw=draw: draw(k, (quantized,)))
    records.append(record(name, lambda f=f: f(key), cores, values=quantized))

  padded = rotation.padded_size(quantized)
  x = jax.random.normal(key, (padded,))
  transforms = []
  for name, transform in (("fwht: rotation.fwht", rotation.fwht),
                          ("fwht: rank-k view (before)", fwht_rank_k)):
    f = jax.jit(transform)
    transforms.append(f(x))
    records.append(record(name, lambda f=f: f(x), cores, values=padded))
  same = same and np.array_equal(*transforms)

  kept = sparsify.num_kept(dense, None, 0.01)
  for name, draw in (("rand_k indices: sparsify.random_indices", sparsify.random_indices),
                     ("rand_k indices: jax.random.permutation (before)",
                      lambda k, d, kept: jax.random.permutation(k, d)[:kept])):
    f = jax.jit(lambda k, draw=draw: draw(k, dense, kept))
    records.append(record(name, lambda f=f: f(key), cores, values=dense))

  values = jax.random.normal(key, (quantized,))
  for bits in (2, 5, 6):
    levels = jnp.asarray(lloyd.gaussian_levels(bits), jnp.float32)
    found = [jax.jit(lloyd.nearest_level)(values, levels)]
    for method in ("compare_all", "scan"):
      f = jax.jit(lambda v, levels, method=method: jnp.searchsorted(
          (levels[1:] + levels[:-1]) / 2, v, method=method))
      found.append(f(values, levels))
      records.append(record(f"nearest of {2**bits} levels: {method}",
                            lambda f=f: f(values, levels), cores, values=quantized))
    same = same and all(np.array_equal(found[0], other) for other in found[1:])
  return records, same


def main(argv):
  del argv
  cli.check_json_path(FLAGS.json)
  model = models.create_model("cnn", 62)
  params = model.init(jax.random.key(0))
  update = jax.tree.map(lambda x: 0.01 * jax.random.normal(jax.random.key(1), (1,) + x.shape),
                        params)
  cores = len(os.sched_getaffinity(0))
  records, folds_agree = fold_records(update, cores)
  quantized = sum(x.size for x in jax.tree.leaves(params) if x.size > 20_000)
  pieces, pieces_agree = piece_records(quantized, params["Dense_0"]["kernel"].size, cores)
  records += pieces
  same = folds_agree and pieces_agree
  print(f"One CNN client (62 classes) folded into a round, {cores} core(s); partial results "
        f"and transforms with either form equal: {same}\n")
  print(f"{'variant':48s} {'ms per client':>14s}")
  for r in records:
    r["same_results"] = same
    print(f"{r['variant']:48s} {r['ms_per_client']:14.2f}")
  cli.write_json(FLAGS.json, records, indent=1)
  if not same:
    raise SystemExit("The two forms of the noise, transform or level search disagreed.")


if __name__ == "__main__":
  app.run(main)
