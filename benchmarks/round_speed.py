"""Seconds per round against a plain-loop baseline, peak memory, and FLOP/s efficiency.

  python -m benchmarks.round_speed --json=/tmp/round_speed.json      # the seed workload
  python -m benchmarks.round_speed --clients=1000 --examples_per_client=10 --rounds=2 \
      --aggregators=mean,compression --memory_limit_gib=8 --json=/tmp/round_speed_1000.json

The commands of the kept results, and the results: benchmarks/RESULTS.md, "Round speed
on CPU" and "One GPU" (`benchmarks/gpu.sh`). Prints a table; `--json` writes the records.

Workload: FedAvg, the 10-class FedAvg CNN, batch 20, 1 epoch, on the real FEMNIST digits
in ../shared/data/femnist_leaf_niid05 when present, else the embedded digits; with
`--examples_per_client=N` the pooled examples are re-cut into clients of N examples (so
that a cohort of 1000 exists and finishes in minutes; examples repeat, cyclically, when
the cohort needs more than the pool holds). Baseline: a Python loop of one
jitted single-client SGD step over the very same batches (no aggregation, no
bookkeeping), the cost floor of any sequential implementation. Rounds of the process and
of the baseline alternate, so that load on the machine hits both alike.

Each configuration runs in its own subprocess, so `peak_rss_mib` is that run's peak
(`ru_maxrss`), capped by `--memory_limit_gib` (address space); a run that fails is
recorded with its error. `matmul_gflops` is the float32 `--matmul_size`^2 `jnp.dot` rate
measured in the same subprocess right after the rounds; `flop_fraction` is the round's useful rate (XLA's FLOP count of
one training step of the baseline's model, times the non-empty batches, over the median
round time) divided by it.
On a GPU: `--memory_limit_gib=0 --matmul_size=8192`; `device_peak_mib` is the
accelerator allocator's peak.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence, cast

import jax
import numpy as np
import optax
from absl import app, flags

from benchmarks import cli
from benchmarks.machine import matmul_gflops
from fedjax_compress import aggregators, learning, models
from fedjax_compress.data import pipeline
from fedjax_compress.data.federated import FederatedData
from fedjax_compress.data.sources import load_federated

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_list("strategies", ["sequential"], "Execution strategies to time.")
flags.DEFINE_list(
  "aggregators",
  ["mean", "compression"],
  "Aggregators to time (aggregators.create_aggregator names); 'default' is "
  "fed_avg's default mean, streamed under sequential/chunked.",
)
flags.DEFINE_list("clients", ["10"], "Clients per round (one configuration each).")
flags.DEFINE_integer(
  "rounds", 12, "Timed rounds per configuration (after one warm-up).", lower_bound=1
)
flags.DEFINE_integer(
  "examples_per_client",
  0,
  "If > 0, re-cut the pooled examples into clients of this many examples.",
  lower_bound=0,
)
flags.DEFINE_list("chunk_sizes", ["8"], "Clients per chunk of the chunked strategy (one run each).")
flags.DEFINE_list("threads", ["2"], "client_threads of the sequential strategy (one run each).")
flags.DEFINE_string("model", "cnn", "Model name (models.create_model).")
flags.DEFINE_string(
  "baseline_model",
  None,
  "The plain loop's model; default --model. `cnn_reference`: the CNN "
  "with Flax's own layers, the step other JAX FL libraries run.",
)
flags.DEFINE_string(
  "data_dir", None, "LEAF FEMNIST folder; default ../shared/data/femnist_leaf_niid05."
)
flags.DEFINE_float(
  "memory_limit_gib",
  16.0,
  "Address-space limit of each configuration's run; 0: none (needed on GPUs, "
  "whose drivers reserve far more address space than memory).",
  lower_bound=0,
)
flags.DEFINE_integer(
  "matmul_size",
  2048,
  "n of the n x n float32 matmul that sets the FLOP rate (2048 fills a CPU; use 8192 on a GPU).",
  lower_bound=1,
)
flags.DEFINE_string(
  "one", None, "Internal: run one configuration 'strategy,aggregator,clients,threads,chunk'."
)
flags.DEFINE_string("one_out", None, "Internal: where that run writes its record.")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "femnist_leaf_niid05"


def load_workload():
  data_dir = Path(FLAGS.data_dir) if FLAGS.data_dir else DEFAULT_DATA
  if data_dir.exists():
    data = load_federated("leaf", "train", data_dir=data_dir, only_digits=True)
    source = f"FEMNIST digits ({data_dir.name})"
  else:
    data, source = load_federated("sklearn_digits", "train"), "embedded sklearn digits"
  n = FLAGS.examples_per_client
  if n > 0:
    x = np.concatenate([data.clients[c][0] for c in data.client_ids])
    y = np.concatenate([data.clients[c][1] for c in data.client_ids])
    # A cohort larger than the pool holds reuses examples, cyclically.
    pieces = max(len(y) // n, max(map(int, FLAGS.clients)))
    order = np.arange(pieces * n) % len(y)
    clients = {
      f"piece_{i:05d}": (x[order[i * n : (i + 1) * n]], y[order[i * n : (i + 1) * n]])
      for i in range(pieces)
    }
    data, source = (
      FederatedData(clients, data.num_classes, data.source),
      f"{source}, {n} examples/client",
    )
  return data, source


def baseline_runner(model, lr):
  """The plain loop: every client from the global params, one jitted step per batch."""

  @jax.jit
  def step(params, x, y, mask):
    grads = jax.grad(lambda p: models.masked_loss(model.apply(p, x), y, mask))(params)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)

  def run(params, batch):
    active = batch.mask.any(axis=-1)
    for c in range(batch.num_clients):
      local = params
      for b in np.flatnonzero(active[c]):
        local = step(local, batch.x[c, b], batch.y[c, b], batch.mask[c, b])
      jax.block_until_ready(local)

  def step_flops(params, batch):
    # XLA:CPU's count on every backend: a GPU's leaves out the convolutions cuDNN runs.
    args = jax.device_put(
      (params, batch.x[0, 0], batch.y[0, 0], batch.mask[0, 0]), jax.devices("cpu")[0]
    )
    analysis = step.lower(*args).compile().cost_analysis()
    assert analysis is not None  # XLA:CPU's compiled programs report one
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])

  return run, step_flops


def baseline_model_name() -> str:
  return FLAGS.baseline_model or FLAGS.model


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_mib() -> float | None:
  """Peak bytes the accelerator's allocator held (None on CPU, which reports none)."""
  stats = jax.devices()[0].memory_stats()
  return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


def round_batches(data, clients):
  return [
    pipeline.round_batch(
      data,
      pipeline.sample_clients(data.client_ids, clients, seed=0, round_num=r),
      batch_size=20,
      seed=0,
      round_num=r,
    )
    for r in range(FLAGS.rounds + 1)
  ]


def time_configuration(data, strategy, aggregator_name, batches, threads, chunk_size):
  model = models.create_model(FLAGS.model, 10)
  process = learning.fed_avg(
    model,
    optax.sgd(0.02),
    optax.sgd(1.0),
    strategy=strategy,
    chunk_size=chunk_size,
    client_threads=threads,
    aggregator=(
      None if aggregator_name == "default" else aggregators.create_aggregator(aggregator_name)
    ),
  )
  # The baseline's step also sets the useful work: a form that computes the same step
  # with more operations (cnn_shifted's concatenations) does not count them.
  baseline, step_flops = baseline_runner(models.create_model(baseline_model_name(), 10), 0.02)
  state = process.init(jax.random.key(0))
  start = time.perf_counter()
  state, _ = process.next(state, batches[0], jax.random.key(0))
  first_round_s = time.perf_counter() - start
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
  steps = statistics.median(int(b.batches_per_client.sum()) for b in batches[1:])
  median, base = statistics.median(process_s), statistics.median(baseline_s)
  try:
    flops = step_flops(state.params, batches[0])
  except Exception as error:  # pylint: disable=broad-except  # keep the timings regardless
    print(f"no FLOP count: {error!r}", file=sys.stderr)
    flops = float("nan")
  return {
    "strategy": process.strategy,
    "requested_strategy": strategy,
    "aggregator": aggregator_name,
    "model": FLAGS.model,
    "baseline_model": baseline_model_name(),
    "client_threads": threads if process.strategy == "sequential" else None,
    # The chunk asked for; a memory budget may halve it (`ChunkedClients` logs that).
    "chunk_size": (
      None
      if process.strategy != "chunked"
      else min(learning.execution.resolve_chunk_size(strategy, chunk_size), batches[0].num_clients)
    ),
    "clients_per_round": batches[0].num_clients,
    "median_round_s": median,
    "baseline_round_s": base,
    "ratio_to_baseline": median / base,
    "examples_per_s": examples / median,
    "median_examples_per_round": examples,
    "median_steps_per_round": steps,
    "step_gflop": flops / 1e9,
    "round_gflops": steps * flops / median / 1e9,
    "compile_s": first_round_s - median,
    "peak_rss_mib": peak_rss_mib(),
    "device_peak_mib": device_peak_mib(),
    "rounds": len(process_s),
  }


def run_one(spec: str, out: str) -> None:
  """One configuration, in this (child) process; writes its record as JSON to `out`."""
  strategy, aggregator_name, clients, threads, chunk_size = spec.split(",")
  data, source = load_workload()
  record = time_configuration(
    data,
    strategy,
    aggregator_name,
    round_batches(data, int(clients)),
    int(threads),
    int(chunk_size),
  )
  record.update(
    data=source,
    backend=jax.default_backend(),
    device=str(jax.devices()[0]),
    cpu_count=os.cpu_count(),
    machine=platform.machine(),
    jax=jax.__version__,
  )
  # Measured right after the rounds, so that both see about the same load.
  record["matmul_gflops"] = matmul_gflops(FLAGS.matmul_size)
  record["flop_fraction"] = record["round_gflops"] / record["matmul_gflops"]
  Path(out).write_text(json.dumps(record))


def run_in_subprocess(
  strategy: str, aggregator_name: str, clients: int, threads: int, chunk_size: int
) -> dict:
  limit = int(FLAGS.memory_limit_gib * 2**30)

  def cap_memory():
    if limit > 0:
      resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

  passed = [a for a in sys.argv[1:] if not a.startswith(("--json", "--one"))]
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "record.json"
    start = time.perf_counter()
    result = subprocess.run(
      [
        sys.executable,
        "-m",
        "benchmarks.round_speed",
        *passed,
        f"--one={strategy},{aggregator_name},{clients},{threads},{chunk_size}",
        f"--one_out={out}",
      ],
      cwd=Path(__file__).resolve().parents[1],
      preexec_fn=cap_memory,
      capture_output=True,
      text=True,
      check=False,
    )
    if result.returncode == 0 and out.exists():
      return json.loads(out.read_text())
  return {
    "strategy": strategy,
    "aggregator": aggregator_name,
    "model": FLAGS.model,
    "clients_per_round": clients,
    "client_threads": threads,
    "chunk_size": chunk_size if strategy == "chunked" else None,
    "failed": True,
    "returncode": result.returncode,
    "wall_s": time.perf_counter() - start,
    "memory_limit_gib": FLAGS.memory_limit_gib,
    "error": result.stderr[-1500:],
  }


def configurations():
  """(strategy, aggregator, clients, threads, chunk size) of each run."""
  for clients in map(int, FLAGS.clients):
    for strategy in FLAGS.strategies:
      all_threads = FLAGS.threads if strategy in ("sequential", "auto") else ["1"]
      chunk_sizes = FLAGS.chunk_sizes if strategy == "chunked" else FLAGS.chunk_sizes[:1]
      for threads in map(int, all_threads):
        for chunk in map(int, chunk_sizes):
          for name in FLAGS.aggregators:
            yield strategy, name, clients, threads, chunk


def parallelism(record) -> str:
  """'x2': two client threads; 'c128': chunks of 128 clients; '' otherwise."""
  if record.get("client_threads") and record["strategy"] == "sequential":
    return f"x{record['client_threads']}"
  return f"c{record['chunk_size']}" if record.get("chunk_size") else ""


def main(argv):
  del argv
  if FLAGS.one:
    run_one(FLAGS.one, FLAGS.one_out)
    return
  if FLAGS.data_dir and not Path(FLAGS.data_dir).exists():
    raise SystemExit(
      f"error: --data_dir={FLAGS.data_dir} does not exist; pass a LEAF FEMNIST "
      f"folder, or leave the flag out to use {DEFAULT_DATA} or the embedded data."
    )
  cli.check_json_path(FLAGS.json)
  checks: list[tuple[str, Sequence[str | None]]] = [
    ("strategies", learning.STRATEGIES),
    ("aggregators", (*aggregators.aggregator_names(), "default")),
    ("model", models.model_names()),
    ("baseline_model", [*models.model_names(), None]),
  ]
  for name, valid in checks:
    value = FLAGS[name].value
    given = value if isinstance(value, list) else [value]
    if unknown := [v for v in given if v not in valid or v == "encoded_mean"]:
      raise SystemExit(
        f"error: --{name}: {unknown} is not one of the valid "
        f"{[v for v in valid if v not in (None, 'encoded_mean')]}."
      )
  for name in ("clients", "threads", "chunk_sizes"):
    values = cast(list[str], FLAGS[name].value)  # list flags, with defaults
    if not all(v.isdigit() and int(v) >= 1 for v in values):
      raise SystemExit(
        f"error: --{name}={','.join(values)} must be positive integers, e.g. --{name}=1,2."
      )
  records = []
  for strategy, name, clients, threads, chunk in configurations():
    record = run_in_subprocess(strategy, name, clients, threads, chunk)
    records.append(record)
    print(
      f"done: {clients} clients, {strategy} {parallelism(record)} / {name}"
      f"{' FAILED: ' + record['error'][-300:] if record.get('failed') else ''}",
      flush=True,
    )
    if FLAGS.json:  # after every run, so that a run cut short keeps what it measured
      Path(FLAGS.json).write_text(json.dumps(records, indent=2))
  print(
    f"\n{FLAGS.model} rounds against a plain loop of {baseline_model_name()} steps, median "
    f"of {FLAGS.rounds} rounds; 'of matmul': the round's "
    f"GFLOP/s over the float32 {FLAGS.matmul_size}^2 matmul's, measured in the same run; "
    f"'x': client threads, 'c': clients per chunk:\n"
  )
  header = (
    f"{'clients':>7} {'strategy':<15} {'x/c':>5} {'aggregator':<12} {'s/round':>8} "
    f"{'baseline':>9} "
    f"{'ratio':>6} {'examples/s':>11} {'GFLOP/s':>8} {'of matmul':>9} {'compile s':>10} "
    f"{'peak RSS MiB':>13} {'device MiB':>11}"
  )
  print(header)
  print("-" * len(header))
  for r in records:
    label = r.get("requested_strategy", r["strategy"]) + (
      f":{r['strategy']}" if r.get("requested_strategy") == "auto" else ""
    )
    if r.get("failed"):
      print(
        f"{r['clients_per_round']:>7} {label:<15} {parallelism(r):>5} "
        f"{r['aggregator']:<12} failed "
        f"(exit {r['returncode']}, limit {r['memory_limit_gib']} GiB)"
      )
      continue
    print(
      f"{r['clients_per_round']:>7} {label:<15} {parallelism(r):>5} "
      f"{r['aggregator']:<12} {r['median_round_s']:>8.3f} {r['baseline_round_s']:>9.3f} "
      f"{r['ratio_to_baseline']:>6.3f} {r['examples_per_s']:>11.0f} "
      f"{r['round_gflops']:>8.1f} {r['flop_fraction']:>9.2f} {r['compile_s']:>10.2f} "
      f"{r['peak_rss_mib']:>13.0f} {r.get('device_peak_mib') or 0:>11.0f}"
    )
  cli.write_json(FLAGS.json, records)


if __name__ == "__main__":
  app.run(main)
