"""Seconds per round of the seed workload, against a plain-loop baseline in the same run.

  python -m benchmarks.round_speed --json=benchmarks/round_speed.json

Workload: FedAvg, the 10-class FedAvg CNN, batch 20, 1 epoch, on the real FEMNIST digits
in ../shared/data/femnist_leaf_niid05 when present, else the embedded digits. Baseline: a
Python loop of one jitted single-client SGD step over the very same batches (no
aggregation, no bookkeeping), the cost floor of any sequential implementation. Rounds of
the process and of the baseline alternate, so that load on the machine hits both alike.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from fedjax_compress import aggregators, learning, models
from fedjax_compress.data import pipeline
from fedjax_compress.data.sources import load_federated

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_list("strategies", ["sequential"], "Execution strategies to time.")
flags.DEFINE_list("aggregators", ["mean", "compression"], "Aggregators to time.")
flags.DEFINE_integer("clients", 10, "Clients per round.")
flags.DEFINE_integer("rounds", 12, "Timed rounds per configuration (after one warm-up).")
flags.DEFINE_string("data_dir", None, "LEAF FEMNIST folder; default ../shared/data/femnist_leaf_niid05.")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "femnist_leaf_niid05"


def load_workload():
  data_dir = Path(FLAGS.data_dir) if FLAGS.data_dir else DEFAULT_DATA
  if data_dir.exists():
    return load_federated("leaf", "train", data_dir=data_dir, only_digits=True), f"FEMNIST digits ({data_dir.name})"
  return load_federated("sklearn_digits", "train"), "embedded sklearn digits"


def baseline_runner(model, lr):
  """The plain loop: every client from the global params, one jitted step per batch."""
  def step(params, x, y, mask):
    grads = jax.grad(lambda p: models.masked_loss(model.apply(p, x), y, mask))(params)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)
  step = jax.jit(step)

  def run(params, batch):
    active = batch.mask.any(axis=-1)
    for c in range(batch.num_clients):
      local = params
      for b in np.flatnonzero(active[c]):
        local = step(local, batch.x[c, b], batch.y[c, b], batch.mask[c, b])
      jax.block_until_ready(local)
  return run


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_configuration(data, strategy, aggregator_name, batches):
  model = models.create_model("cnn", 10)
  process = learning.fed_avg(model, optax.sgd(0.02), optax.sgd(1.0), strategy=strategy,
                             aggregator=aggregators.create_aggregator(aggregator_name))
  baseline = baseline_runner(model, 0.02)
  state = process.init(jax.random.key(0))
  start = time.perf_counter()
  state, _ = process.next(state, batches[0], jax.random.key(0))
  compile_s = time.perf_counter() - start
  baseline(state.params, batches[0])
  process_s, baseline_s = [], []
  for r, batch in enumerate(batches[1:], start=1):
    start = time.perf_counter()
    state, _ = process.next(state, batch, jax.random.key(r))
    process_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    baseline(state.params, batch)
    baseline_s.append(time.perf_counter() - start)
  examples = statistics.median(int(b.mask.sum()) for b in batches[1:])
  median, base = statistics.median(process_s), statistics.median(baseline_s)
  return {
      "strategy": process.strategy, "aggregator": aggregator_name,
      "clients_per_round": batches[0].num_clients,
      "median_round_s": median, "baseline_round_s": base, "ratio_to_baseline": median / base,
      "examples_per_s": examples / median, "median_examples_per_round": examples,
      "compile_s": compile_s - median, "peak_rss_mib": peak_rss_mib(),
      "rounds": len(process_s),
  }


def main(argv):
  del argv
  data, source = load_workload()
  batches = [pipeline.round_batch(data, pipeline.sample_clients(data.client_ids, FLAGS.clients,
                                                                seed=0, round_num=r),
                                  batch_size=20, seed=0, round_num=r)
             for r in range(FLAGS.rounds + 1)]
  records = []
  for strategy in FLAGS.strategies:
    for name in FLAGS.aggregators:
      record = time_configuration(data, strategy, name, batches)
      record.update(data=source, backend=jax.default_backend(), device=str(jax.devices()[0]),
                    cpu_count=os.cpu_count(), machine=platform.machine(), jax=jax.__version__)
      records.append(record)
      print(f"done: {strategy} / {name}", flush=True)
  print(f"\nSeed workload on {source}, {FLAGS.clients} clients/round, backend "
        f"{jax.default_backend()}, median of {FLAGS.rounds} rounds:\n")
  header = (f"{'strategy':<11} {'aggregator':<12} {'s/round':>8} {'baseline':>9} {'ratio':>6} "
            f"{'examples/s':>11} {'compile s':>10} {'peak RSS MiB':>13}")
  print(header)
  print("-" * len(header))
  for r in records:
    print(f"{r['strategy']:<11} {r['aggregator']:<12} {r['median_round_s']:>8.3f} "
          f"{r['baseline_round_s']:>9.3f} {r['ratio_to_baseline']:>6.3f} "
          f"{r['examples_per_s']:>11.0f} {r['compile_s']:>10.2f} {r['peak_rss_mib']:>13.0f}")
  if FLAGS.json:
    Path(FLAGS.json).write_text(json.dumps(records, indent=2))
    print(f"\nwrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
