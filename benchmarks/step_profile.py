"""Where one CNN client step spends its time on this backend, op by op.

  python -m benchmarks.step_profile --json=benchmarks/step_profile.json

The real client step (what `SequentialClients` jits: `client.local_sgd`, batch 20) of
each `--models` form is traced with `jax.profiler` for `--steps` steps; the trace's XLA
ops are summed by name and classed from the compiled HLO: `matmul` (a dot or a
convolution, alone or inside a fusion) or `other` (data movement and elementwise work:
padding, slicing, concatenation, pooling, the optimizer update). `bound` is the
fraction of the float32 matmul rate that the step would reach if its `other` ops took no
time at all: XLA's FLOP count of the `cnn` step over the `matmul` ops' time.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax
from absl import app, flags

from benchmarks.machine import matmul_gflops
from fedjax_compress import models
from fedjax_compress.learning import client, execution

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_list("models", ["cnn", "cnn_shifted"], "Models (models.create_model names).")
flags.DEFINE_integer("steps", 20, "Traced steps per model.", lower_bound=1)
flags.DEFINE_integer("top", 12, "Ops listed per model.", lower_bound=0)

# Events of the runtime and of Python, not of the program's ops.
_NOT_OPS = ("$", "ThunkExecutor", "PjitFunction", "SlinkyThreadPool", "TfrtCpu")


def matmul_ops(hlo: str) -> set[str]:
  """Names of the entry's instructions that are, or fuse, a dot or a convolution."""
  bodies = dict(re.findall(r"^%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M))
  is_matmul = lambda text: re.search(r"\b(dot|convolution)\(", text) is not None
  names = set()
  for name, rest in re.findall(r"^\s+(?:ROOT )?%([\w.\-]+) = (.*)$", hlo, re.M):
    called = re.search(r"calls=%([\w.\-]+)", rest)
    if is_matmul(rest.split(", metadata=")[0]) or (called and is_matmul(bodies.get(called[1], ""))):
      names.add(name)
  return names


def op_times(run, steps: int) -> dict[str, float]:
  """Milliseconds per step of every XLA op in a `jax.profiler` trace of `run(steps)`."""
  with tempfile.TemporaryDirectory(prefix="step_profile_") as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      run(steps)
    trace = next(Path(tmp).rglob("*.trace.json.gz"))
    events = json.load(gzip.open(trace))
  events = events["traceEvents"] if isinstance(events, dict) else events
  total = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(_NOT_OPS):
      total[e["name"]] += e.get("dur", 0) / 1e3 / steps
  return dict(total)


def profile(model_name: str, reference_flops: float) -> dict:
  model = models.create_model(model_name, 10)
  global_params = model.init(jax.random.key(0))
  trainer = client.local_sgd(model, optax.sgd(0.02))
  step = jax.jit(execution._keyed_step(trainer))  # pylint: disable=protected-access
  carry = jax.jit(trainer.init)(global_params)
  rng = np.random.default_rng(0)
  x = rng.random((20, 28, 28, 1), dtype=np.float32)
  y = rng.integers(0, 10, 20).astype(np.int32)
  mask = np.ones(20, bool)
  key = jax.random.key(1)

  def run(steps):
    c = carry
    for i in range(steps):
      c = step(c, global_params, x, y, mask, key, np.int32(i))
    jax.block_until_ready(c)

  run(2)
  start = time.perf_counter()
  run(FLAGS.steps)
  wall_ms = 1e3 * (time.perf_counter() - start) / FLAGS.steps
  times = op_times(run, FLAGS.steps)
  hlo = step.lower(carry, global_params, x, y, mask, key, np.int32(0)).compile().as_text()
  matmuls = matmul_ops(hlo)
  matmul_ms = sum(t for name, t in times.items() if name in matmuls)
  other_ms = sum(t for name, t in times.items() if name not in matmuls)
  return {"model": model_name, "step_ms": wall_ms, "ops_ms": matmul_ms + other_ms,
          "matmul_ms": matmul_ms, "other_ms": other_ms,
          "bound_gflops": reference_flops / matmul_ms / 1e6,
          "ops": sorted(([name, t, name in matmuls] for name, t in times.items()),
                        key=lambda op: -op[1])}


def reference_step_flops() -> float:
  """XLA's FLOP count of one `cnn` SGD step (round_speed's `step_gflop`): the useful
  work, whatever form computes it."""
  model = models.create_model("cnn", 10)
  params = model.init(jax.random.key(0))
  x, y, mask = np.zeros((20, 28, 28, 1), np.float32), np.zeros(20, np.int32), np.ones(20, bool)

  def sgd_step(p):
    grads = jax.grad(lambda p: models.masked_loss(model.apply(p, x), y, mask))(p)
    return jax.tree.map(lambda a, g: a - 0.02 * g, p, grads)
  cost = jax.jit(sgd_step).lower(params).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def main(argv):
  del argv
  if unknown := sorted(set(FLAGS.models) - set(models.model_names())):
    raise SystemExit(f"error: --models: {unknown} unknown; valid: {models.model_names()}.")
  flops = reference_step_flops()
  records = [profile(name, flops) for name in FLAGS.models]
  matmul = matmul_gflops()
  for r in records:
    r["matmul_gflops"] = matmul
    r["fraction"] = flops / r["step_ms"] / 1e6 / matmul
    r["bound"] = r["bound_gflops"] / matmul
  print(f"\nOne client step (batch 20, {flops / 1e9:.3f} GFLOP), {FLAGS.steps} traced steps, "
        f"backend {jax.default_backend()}; float32 matmul {matmul:.0f} GFLOP/s:\n")
  print(f"{'model':<12} {'step ms':>8} {'ops ms':>7} {'matmul ms':>10} {'other ms':>9} "
        f"{'of matmul':>10} {'bound':>6}")
  for r in records:
    print(f"{r['model']:<12} {r['step_ms']:>8.2f} {r['ops_ms']:>7.2f} {r['matmul_ms']:>10.2f} "
          f"{r['other_ms']:>9.2f} {r['fraction']:>10.2f} {r['bound']:>6.2f}")
  for r in records:
    print(f"\n{r['model']}: the {FLAGS.top} longest ops (ms per step)")
    for name, t, is_matmul in r["ops"][:FLAGS.top]:
      print(f"  {t:7.3f}  {'matmul' if is_matmul else 'other ':<6}  {name}")
  if FLAGS.json:
    Path(FLAGS.json).write_text(json.dumps(records, indent=2))
    print(f"\nwrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
