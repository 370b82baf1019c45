"""Where one CNN client step spends its time on this backend, op by op.

  python -m benchmarks.step_profile --json=benchmarks/step_profile.json

The real client step (what `SequentialClients` jits: `client.local_sgd`, batch 20) of
each `--models` form is traced with `jax.profiler` for `--steps` steps; the trace's XLA
ops are summed by name and classed from the compiled HLO: `matmul` (a dot or a
convolution, alone or inside a fusion) or `other` (data movement and elementwise work:
padding, slicing, concatenation, pooling, the optimizer update).

Some ops run asynchronously on XLA:CPU's intra-op threads (plain `dot`s, parallel loop
fusions): the trace shows their dispatch and, as "end: NAME", their completion, while
other ops run. Such an op's time lies between its dispatch time and its span (dispatch
to completion), so each class's time is given as that range (spans overlap: the upper
ends can add up to more than the step). `bound` is the fraction of the float32 matmul rate
that the step would reach if its `other` ops took no time at all (XLA's FLOP count of the
`cnn_reference` step over the `matmul` time), for both ends of the range.
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

from benchmarks import cli
from benchmarks.machine import matmul_gflops
from fedjax_compress import models
from fedjax_compress.learning import client, execution

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_list("models", ["cnn_reference", "cnn", "cnn_shifted"], "Models (models.create_model names).")
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


def op_sources(hlo: str) -> dict[str, str]:
  """The JAX operation each entry instruction came from (its metadata's op_name)."""
  return {name: source.split("/", 1)[-1] for name, source in
          re.findall(r"^\s+(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"", hlo, re.M)}


def op_times(run, steps: int) -> dict[str, tuple[float, float]]:
  """(busy, span) milliseconds per step of every XLA op in a `jax.profiler` trace of
  `run(steps)`: busy sums the op's own events; span runs from each event's start to
  its "end: NAME" completion where the op has one (asynchronous ops), else equals busy."""
  with tempfile.TemporaryDirectory(prefix="step_profile_") as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      run(steps)
    trace = next(Path(tmp).rglob("*.trace.json.gz"))
    events = json.load(gzip.open(trace))
  events = events["traceEvents"] if isinstance(events, dict) else events
  starts, ends = collections.defaultdict(list), collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(_NOT_OPS):
      if e["name"].startswith("end: "):
        ends[e["name"][5:]].append(e["ts"] + e.get("dur", 0))
      else:
        starts[e["name"]].append((e["ts"], e.get("dur", 0)))
  times = {}
  for name, events_ in starts.items():
    busy = sum(d for _, d in events_)
    span = busy
    if ends.get(name):
      begins, done = sorted(t for t, _ in events_), sorted(ends[name])
      # Each completion closes the latest start before it.
      span = sum(end - max(t for t in begins if t <= end) for end in done)
    times[name] = (busy / 1e3 / steps, span / 1e3 / steps)
  return times


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
  matmuls, sources = matmul_ops(hlo), op_sources(hlo)
  total = lambda which, in_class: sum(t[which] for name, t in times.items()
                                      if (name in matmuls) == in_class)
  matmul_ms = (total(0, True), total(1, True))
  return {"model": model_name, "step_ms": wall_ms,
          "matmul_ms": matmul_ms, "other_ms": (total(0, False), total(1, False)),
          "bound_gflops": (reference_flops / matmul_ms[1] / 1e6,
                           reference_flops / matmul_ms[0] / 1e6),
          "ops": sorted(([name, busy, span, name in matmuls, sources.get(name, "")]
                         for name, (busy, span) in times.items()), key=lambda op: -op[2])}


def reference_step_flops() -> float:
  """XLA's FLOP count of one `cnn_reference` SGD step (Flax's layers): the useful work,
  whatever form computes it."""
  model = models.create_model("cnn_reference", 10)
  params = model.init(jax.random.key(0))
  x, y, mask = np.zeros((20, 28, 28, 1), np.float32), np.zeros(20, np.int32), np.ones(20, bool)

  def sgd_step(p):
    grads = jax.grad(lambda p: models.masked_loss(model.apply(p, x), y, mask))(p)
    return jax.tree.map(lambda a, g: a - 0.02 * g, p, grads)
  cost = jax.jit(sgd_step).lower(params).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def main(argv):
  del argv
  cli.check_model_names(FLAGS.models)
  cli.check_json_path(FLAGS.json)
  flops = reference_step_flops()
  records = [profile(name, flops) for name in FLAGS.models]
  matmul = matmul_gflops()
  for r in records:
    r["matmul_gflops"] = matmul
    r["fraction"] = flops / r["step_ms"] / 1e6 / matmul
    r["bound"] = [b / matmul for b in r["bound_gflops"]]
  print(f"\nOne client step (batch 20, {flops / 1e9:.3f} GFLOP), {FLAGS.steps} traced steps, "
        f"backend {jax.default_backend()}; float32 matmul {matmul:.0f} GFLOP/s:\n")
  print(f"{'model':<14} {'step ms':>8} {'matmul ms':>11} {'other ms':>11} {'of matmul':>10} "
        f"{'bound':>10}")
  interval = lambda pair: f"{pair[0]:.2f}-{pair[1]:.2f}"
  for r in records:
    print(f"{r['model']:<14} {r['step_ms']:>8.2f} {interval(r['matmul_ms']):>11} "
          f"{interval(r['other_ms']):>11} {r['fraction']:>10.2f} {interval(r['bound']):>10}")
  for r in records:
    print(f"\n{r['model']}: the {FLAGS.top} longest ops (ms per step; span: dispatch to "
          f"completion where the op runs asynchronously)")
    for name, busy, span, is_matmul, source in r["ops"][:FLAGS.top]:
      timing = f"{busy:7.3f}" + (f" (span {span:.3f})" if span != busy else " " * 14)
      print(f"  {timing}  {'matmul' if is_matmul else 'other ':<6}  {name:<26} {source}")
  cli.write_json(FLAGS.json, records)


if __name__ == "__main__":
  app.run(main)
