"""Ways to run the clients of a CPU round faster than a plain loop of a jitted step.

  python -m benchmarks.cpu_paths --json=/tmp/cpu_paths.json

The FedAvg CNN, batch 20, in the form the config names (`create_model("cnn")` unless
said otherwise), the real client step
(`execution._keyed_step(client.local_sgd(model, optax.sgd(0.02)))`, what
`SequentialClients` jits). One timing = `--clients` clients x `--steps` steps each,
every client starting from the same global parameters with its own data; reported per
client-step (median over all timings of all passes).

Variants (inside one process, alternated timing by timing so that load hits all alike):
- `loop`: the clients one after another, a Python loop of the jitted step (the baseline
  when run with default flags: what `SequentialClients` does);
- `threads`: one host thread per client (`ThreadPoolExecutor`), each running its own
  client's loop (jitted calls release the GIL);
- `interleave`: one host thread dispatching the clients' steps alternately (step k of
  client 1, step k of client 2, ...), relying on asynchronous dispatch;
- `paired`: one jitted program computing one step of each of two clients (two
  independent subgraphs, not `vmap`);
- `*_dev`: the same with client i's arrays committed to CPU device i
  (`--xla_force_host_platform_device_count=2`);
- `matmul`: float32 2048x2048 `jnp.dot`, for the fraction-of-peak figure.

The `reference` and `shifted` configs run the same variants on
`create_model("cnn_reference")` (Flax's `nn.max_pool`) and `create_model("cnn_shifted")`
(convolutions as shifted copies times a matrix): the same function, so their `max |dp|`
is the rounding difference between the forms.

XLA:CPU flags are read when jax starts, so every flag set is its own subprocess (a
*config*); the configs run in turn, `--passes` times (reversed order on odd passes). A
flag the installed jaxlib does not know makes XLA abort: such a config is reported as
`unknown flag`. Final parameters of every client are compared with those of `loop` under
default flags (`max |dp|`), and each variant's results across its repeats (`nondet`: max
difference between repeats; 0 means deterministic). `cpu/wall` is the process's CPU
time over wall time during a timing: about 1 means one core's worth was used, so
intra-op or inter-client parallelism had nothing to run on (check the load average
printed at the end: other jobs on the box take the second core).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

from benchmarks import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_integer("steps", 8, "Steps per client per timing.", lower_bound=1)
flags.DEFINE_integer("clients", 2, "Clients per timing (2 for the paired/threaded forms).")
flags.DEFINE_integer("repeats", 4, "Timings per variant per pass.", lower_bound=1)
flags.DEFINE_integer("passes", 2, "Passes over all configs.", lower_bound=1)
flags.DEFINE_list("configs", None, "Run only these configs (default: all).")
flags.DEFINE_integer("timeout", 240, "Seconds per config subprocess.", lower_bound=1)
flags.DEFINE_string("worker", None, "Internal: run this config's variants in this process.")
flags.DEFINE_string("worker_out", None, "Internal: where the worker writes its results.")

SINGLE = "--xla_cpu_multi_thread_eigen=false"
BASE_VARIANTS = ["loop", "threads", "interleave", "paired", "matmul"]

# name -> (XLA_FLAGS, variants, note[, model]); the model is "cnn" unless named.
CONFIGS = {
    "default": ("", BASE_VARIANTS, ""),
    "reference": ("", BASE_VARIANTS, "cnn_reference", "cnn_reference"),
    "shifted": ("", BASE_VARIANTS, "cnn_shifted", "cnn_shifted"),
    "single_thread_xla": (SINGLE, BASE_VARIANTS, ""),
    "two_devices": ("--xla_force_host_platform_device_count=2",
                    ["loop", "threads_dev", "interleave_dev", "matmul"], ""),
    "two_devices_single_thread": (SINGLE + " --xla_force_host_platform_device_count=2",
                                  ["threads_dev", "interleave_dev", "matmul"], ""),
    "concurrency_scheduler": ("--xla_cpu_enable_concurrency_optimized_scheduler=true",
                              ["loop", "paired", "matmul"], ""),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", ["loop", "matmul"], ""),
    "xnn_graph_greedy": ("--xla_cpu_experimental_xnn_graph_fusion_mode="
                         "XNN_GRAPH_FUSION_MODE_GREEDY", ["loop", "matmul"], ""),
    "xnn_fusion_dot_eltwise_reduce": ("--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
                                      ["loop", "matmul"], ""),
    "ynn_fusion_conv": ("--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
                        ["loop", "matmul"], ""),
    "onednn_fusion_dot_eltwise_reduce": (
        "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce", ["loop", "matmul"], ""),
    "fast_math": ("--xla_cpu_enable_fast_math=true", ["loop", "matmul"],
                  "changes numerics"),
    "thunk_runtime_off": ("--xla_cpu_use_thunk_runtime=false", ["loop", "matmul"],
                          "flag deprecated: ignored"),
}


def config_model(config: str) -> str:
  return CONFIGS[config][3] if len(CONFIGS[config]) > 3 else "cnn"


# ----------------------------------------------------------------------------- worker


def _worker(config: str, out: str):
  import concurrent.futures

  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from fedjax_compress import models
  from fedjax_compress.learning import client, execution

  variants = CONFIGS[config][1]
  n, nc = FLAGS.steps, FLAGS.clients
  model = models.create_model(config_model(config), 10)
  global_params = model.init(jax.random.key(0))
  trainer = client.local_sgd(model, optax.sgd(0.02))
  step = execution._keyed_step(trainer)  # pylint: disable=protected-access
  jstep = jax.jit(step)
  start = jax.jit(trainer.init)(global_params)
  rng = np.random.default_rng(0)
  x = rng.random((nc, n, 20, 28, 28, 1), dtype=np.float32)
  y = rng.integers(0, 10, (nc, n, 20)).astype(np.int32)
  mask = np.ones((nc, n, 20), bool)
  keys = jax.random.split(jax.random.key(1), nc)
  idx = [np.int32(b) for b in range(n)]

  compiled = jstep.lower(start, global_params, x[0, 0], y[0, 0], mask[0, 0], keys[0],
                         idx[0]).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  step_flops = float(cost["flops"])

  def run_client(c, carry, g, key):
    for b in range(n):
      carry = jstep(carry, g, x[c, b], y[c, b], mask[c, b], key, idx[b])
    return carry

  def loop():
    return [run_client(c, start, global_params, keys[c]) for c in range(nc)]

  pool = concurrent.futures.ThreadPoolExecutor(nc)

  def threads():
    futures = [pool.submit(run_client, c, start, global_params, keys[c]) for c in range(nc)]
    return [jax.block_until_ready(f.result()) for f in futures]

  def interleave(starts=None, gs=None, ks=None):
    carries = list(starts or [start] * nc)
    gs = gs or [global_params] * nc
    ks = ks or list(keys)
    for b in range(n):
      for c in range(nc):
        carries[c] = jstep(carries[c], gs[c], x[c, b], y[c, b], mask[c, b], ks[c], idx[b])
    return carries

  pair_step = jax.jit(lambda c1, c2, g, x1, y1, m1, k1, x2, y2, m2, k2, i: (
      step(c1, g, x1, y1, m1, k1, i), step(c2, g, x2, y2, m2, k2, i)))

  def paired():
    assert nc == 2, "paired needs --clients=2"
    c1 = c2 = start
    for b in range(n):
      c1, c2 = pair_step(c1, c2, global_params, x[0, b], y[0, b], mask[0, b], keys[0],
                         x[1, b], y[1, b], mask[1, b], keys[1], idx[b])
    return [c1, c2]

  devices = jax.devices()
  if any(v.endswith("_dev") for v in variants):
    assert len(devices) >= nc, f"need {nc} CPU devices, have {len(devices)}"
  on = lambda tree, c: jax.device_put(tree, devices[c % len(devices)])
  dev_starts = [on(start, c) for c in range(nc)]
  dev_gs = [on(global_params, c) for c in range(nc)]
  dev_keys = [on(keys[c], c) for c in range(nc)]

  def threads_dev():
    futures = [pool.submit(run_client, c, dev_starts[c], dev_gs[c], dev_keys[c])
               for c in range(nc)]
    return [jax.block_until_ready(f.result()) for f in futures]

  def interleave_dev():
    return interleave(dev_starts, dev_gs, dev_keys)

  a = jnp.asarray(rng.random((2048, 2048), dtype=np.float32))
  dot = jax.jit(jnp.dot)

  def matmul():
    return dot(a, a)

  forms = {"loop": loop, "threads": threads, "interleave": interleave, "paired": paired,
           "threads_dev": threads_dev, "interleave_dev": interleave_dev, "matmul": matmul}
  record = {"config": config, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "step_flops": step_flops, "devices": len(devices), "variants": {},
            "loadavg_1min_start": os.getloadavg()[0]}
  params = {}
  first = {}
  for v in variants:  # compile and warm up
    t0 = time.perf_counter()
    result = jax.block_until_ready(forms[v]())
    first[v] = time.perf_counter() - t0
    if v != "matmul":
      params[v] = [[np.asarray(leaf) for leaf in jax.tree.leaves(carry[0])] for carry in result]
  times = {v: [] for v in variants}
  cpu = {v: [] for v in variants}
  nondet = {v: 0.0 for v in variants}
  for _ in range(FLAGS.repeats):
    for v in variants:
      w0, p0 = time.perf_counter(), time.process_time()
      result = jax.block_until_ready(forms[v]())
      wall, proc = time.perf_counter() - w0, time.process_time() - p0
      times[v].append(wall)
      cpu[v].append(proc / wall)
      if v != "matmul":
        for ref, carry in zip(params[v], result):
          for r, leaf in zip(ref, jax.tree.leaves(carry[0])):
            nondet[v] = max(nondet[v], float(np.max(np.abs(r - np.asarray(leaf)))))
  pool.shutdown()
  record["loadavg_1min_end"] = os.getloadavg()[0]
  for v in variants:
    count = 1 if v == "matmul" else nc * n
    flops = 2 * 2048**3 if v == "matmul" else step_flops
    ms = [1e3 * t / count for t in times[v]]
    record["variants"][v] = {
        "ms": ms, "gflops": [flops / (1e6 * m) for m in ms],
        "cpu_per_wall": statistics.median(cpu[v]), "first_call_s": first[v],
        "nondet": nondet[v]}
  np.savez(out + ".npz", **{f"{v}/{c}/{i}": leaf for v, per in params.items()
                            for c, leaves in enumerate(per) for i, leaf in enumerate(leaves)})
  Path(out).write_text(json.dumps(record))


# ----------------------------------------------------------------------------- parent


def _run_config(config: str, tag: str, tmp: Path) -> dict:
  xla_flags, _, note = CONFIGS[config][:3]
  out = str(tmp / f"{config}_{tag}.json")
  env = dict(os.environ, XLA_FLAGS=xla_flags)
  env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, "-m", "benchmarks.cpu_paths", f"--worker={config}",
         f"--worker_out={out}", f"--steps={FLAGS.steps}", f"--clients={FLAGS.clients}",
         f"--repeats={FLAGS.repeats}"]
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=FLAGS.timeout, cwd=Path(__file__).resolve().parent.parent)
  except subprocess.TimeoutExpired:
    return {"config": config, "error": "timeout", "note": note}
  if proc.returncode != 0 or not Path(out).exists():
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    unknown = any("Unknown flag" in line for line in tail)
    return {"config": config, "error": "unknown flag" if unknown else "failed",
            "detail": " | ".join(tail)[-400:], "note": note}
  record = json.loads(Path(out).read_text())
  record["note"] = note
  record["params_file"] = out + ".npz"
  return record


def _max_diff(path, ref_path, variant):
  import numpy as np
  got, ref = np.load(path), np.load(ref_path)
  diffs, scale = [], 0.0
  for key in ref.files:
    if key.startswith("loop/"):
      other = variant + key[len("loop"):]
      diffs.append(float(np.max(np.abs(got[other] - ref[key]))))
      scale = max(scale, float(np.max(np.abs(ref[key]))))
  return max(diffs), scale


def main(argv):
  del argv
  if FLAGS.worker:
    _worker(FLAGS.worker, FLAGS.worker_out)
    return
  unknown = sorted(set(FLAGS.configs or ()) - set(CONFIGS))
  if unknown:
    raise SystemExit(f"error: --configs: unknown {unknown}; valid: {sorted(CONFIGS)}.")
  if FLAGS.clients != 2:
    raise SystemExit(f"error: --clients={FLAGS.clients}: the paired and threaded forms run "
                     f"2 clients; leave it at 2.")
  cli.check_json_path(FLAGS.json)
  configs = FLAGS.configs or list(CONFIGS)
  if "default" not in configs:
    configs = ["default"] + configs
  # The workers' results and parameters (~0.3 GB a run) live only as long as this run.
  with tempfile.TemporaryDirectory(prefix="cpu_paths_") as tmp:
    _compare(configs, Path(tmp))


def _compare(configs: list[str], tmp: Path) -> None:
  """Runs every config in its own subprocess, `--passes` times, and reports."""
  t_start = time.perf_counter()
  runs = {c: [] for c in configs}
  for p in range(FLAGS.passes):
    order = configs if p % 2 == 0 else configs[::-1]
    for c in order:
      t0 = time.perf_counter()
      runs[c].append(_run_config(c, str(p), tmp))
      print(f"pass {p} {c}: {time.perf_counter() - t0:.0f} s "
            f"{runs[c][-1].get('error', '')}", flush=True)

  good = {c: [r for r in runs[c] if "error" not in r] for c in configs}
  base_runs = good["default"]
  if not base_runs:
    raise SystemExit("default config failed: " + json.dumps(runs["default"]))
  pool_ms = lambda c, v: [m for r in good[c] for m in r["variants"][v]["ms"]]
  base_ms = statistics.median(pool_ms("default", "loop"))
  peak = statistics.median(g for r in base_runs for g in r["variants"]["matmul"]["gflops"])
  ref_file = base_runs[0]["params_file"]
  records = []
  for c in configs:
    if not good[c]:
      r = runs[c][0]
      records.append({"config": c, "variant": "-", "error": r["error"],
                      "detail": r.get("detail", ""), "note": r["note"],
                      "xla_flags": CONFIGS[c][0]})
      continue
    for v in CONFIGS[c][1]:
      ms = pool_ms(c, v)
      med = statistics.median(ms)
      rec = {"config": c, "variant": v, "xla_flags": CONFIGS[c][0], "note": good[c][0]["note"],
             "ms_median": med, "ms_all": ms,
             "cpu_per_wall": statistics.median(r["variants"][v]["cpu_per_wall"] for r in good[c]),
             "nondet": max(r["variants"][v]["nondet"] for r in good[c])}
      if v == "matmul":
        rec["gflops"] = 2 * 2048**3 / (1e6 * med)
      else:
        # Useful work is the reference step's count, whatever form computes it.
        rec["gflops"] = base_runs[0]["step_flops"] / (1e6 * med)
        rec["ratio_to_loop"] = med / base_ms
        rec["speedup"] = base_ms / med
        rec["fraction_of_matmul"] = rec["gflops"] / peak
        rec["max_abs_dparam"], rec["param_scale"] = _max_diff(good[c][0]["params_file"], ref_file, v)
        # Per pass, against the default loop of the same pass: load drifts between passes.
        rec["ratio_per_pass"] = [
            statistics.median(r["variants"][v]["ms"]) / statistics.median(b["variants"]["loop"]["ms"])
            for r, b in zip(good[c], base_runs)]
      records.append(rec)

  print(f"\nFedAvg CNN client-steps (batch 20, {FLAGS.clients} clients x {FLAGS.steps} steps per "
        f"timing, {FLAGS.repeats} timings x {FLAGS.passes} passes), step "
        f"{base_runs[0]['step_flops'] / 1e9:.3f} GFLOP; matmul peak (default flags) "
        f"{peak:.0f} GFLOP/s; baseline = default/loop {base_ms:.1f} ms\n")
  head = (f"{'config':<34} {'variant':<15} {'ms/c-step':>9} {'x loop':>6} {'per pass':>11} "
          f"{'GFLOP/s':>7} {'of mm':>6} {'cpu/wall':>8} {'max|dp|':>8} {'nondet':>7}  note")
  print(head)
  print("-" * len(head))
  for r in records:
    if "error" in r:
      print(f"{r['config']:<34} {'-':<15} {r['error']}: {r.get('detail', '')[:80]}")
      continue
    if r["variant"] == "matmul":
      print(f"{r['config']:<34} {'matmul 2048':<15} {r['ms_median']:>9.1f} {'':>6} {'':>11} "
            f"{r['gflops']:>7.0f} {'':>6} {r['cpu_per_wall']:>8.2f}")
      continue
    per_pass = ",".join(f"{x:.2f}" for x in r["ratio_per_pass"])
    print(f"{r['config']:<34} {r['variant']:<15} {r['ms_median']:>9.1f} {r['ratio_to_loop']:>6.2f} "
          f"{per_pass:>11} {r['gflops']:>7.1f} {r['fraction_of_matmul']:>6.2f} "
          f"{r['cpu_per_wall']:>8.2f} {r['max_abs_dparam']:>8.1e} {r['nondet']:>7.1e}  {r['note']}")
  loads = [r[k] for c in configs for r in good[c] for k in ("loadavg_1min_start", "loadavg_1min_end")]
  print(f"\ntotal {time.perf_counter() - t_start:.0f} s; param scale (max |p|) "
        f"{records[0].get('param_scale', float('nan')):.3f}; 1-min load average during the "
        f"workers {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs (cpu/wall ~1 = one core's worth)")
  if FLAGS.json:
    Path(FLAGS.json).write_text(json.dumps({
        "baseline_ms": base_ms, "matmul_peak_gflops": peak, "steps": FLAGS.steps,
        "clients": FLAGS.clients, "repeats": FLAGS.repeats, "passes": FLAGS.passes,
        "records": records, "runs": runs}, indent=2))
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
