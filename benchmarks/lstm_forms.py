"""Per-step and per-round cost of the LSTM language models' SGD step, in several forms.

  python -m benchmarks.lstm_forms --json=benchmarks/lstm_forms.json [--quick]

Models (Reddi et al. 2021): `char`, the Shakespeare character LSTM (embedding 8, LSTM
256, LSTM 256, dense to 90 logits; batch 4 x 80 steps), and `word`, the Stack Overflow
word LSTM (embedding 96, LSTM 670, dense 96, dense to 10,004 logits; batch 16 x 20).
Random tokens; one step is forward, backward and an SGD update of all parameters.

Step forms, each one jitted step (compiled ahead, compile time recorded):
  * `flax nn.RNN`: `nn.RNN(nn.OptimizedLSTMCell)` per layer (Flax's scan);
  * `fused, autodiff`: `models.lstm.LSTM` (input projections for all steps at once,
    one h @ W_h per step) with JAX's own gradient of the scan;
  * `fused, unroll u`: the same with its hand-written backward pass (the library's
    default), scan unrolled u steps per iteration;
  * `fused, vmap C`: C clients with their own parameters and batches in one step,
    `jax.vmap`; its time is per client-step.
All forms are timed in alternation (one timing of each form per repetition), so that
load from other jobs hits them alike; medians over the repetitions after a warm-up.

FLOP counts are analytic (what the matrix products need): forward 2 * T * B * (in * 4H
+ H * 4H) per LSTM layer plus 2 * T * B * in * out per dense layer; a training step is
3x forward (the backward pass is 2x forward: a product for the input's gradient and one
for the weights'); gate nonlinearities, softmax and the update are not counted. XLA's
own `cost_analysis` counts a loop body once, so it is not used. `matmul`: the float32
2048x2048 `jnp.dot` rate (both cores busy), timed in turns with the forms of the same
table, so under the same load; a [320, 256] x [256, 1024] product (the second char
layer's input projection) is timed alongside it (JSON only). `of matmul`: a form's
GFLOP/s over `matmul`. `best`: the fastest timing. `cores`: the process's CPU time over
the wall time while a form ran (other jobs' load does not inflate it; near 1 means one
core). `benchmarks.machine.matmul_gflops` before and after the run is recorded too.

Round forms (`--round_model`, default char): `--round_clients` clients each run one
epoch of `--round_batches` batches from the same parameters: a plain Python loop of one
jitted step (of the reference step and of the fused one; the plain loop of
benchmarks/round_speed.py, no aggregation), the same with 2 host threads taking clients
(the `sequential` strategy's `client_threads=2`), `lax.scan` over a client's steps
(one call per client, with and without 2 threads), and `vmap` over all clients of that
scan with the mean of their parameters (one call per round).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import linen as nn

from benchmarks import cli
from benchmarks.machine import matmul_gflops
from fedjax_compress.models import lstm, masked_loss

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_bool("quick", False, "Fewer forms, repetitions and clients (a smoke run).")
flags.DEFINE_integer(
  "repeats", 7, "Timings per form after the warm-up; medians reported.", lower_bound=1
)
flags.DEFINE_integer("steps", 2, "Steps per step-form timing.", lower_bound=1)
flags.DEFINE_list("models", ["char", "word"], "Models to time the step forms of.")
flags.DEFINE_string("round_model", "char", "Model of the round forms ('' for none).")
flags.DEFINE_integer("round_clients", 10, "Clients per round.", lower_bound=1)
flags.DEFINE_integer("round_batches", 12, "Batches per client per round.", lower_bound=1)
flags.DEFINE_integer("round_repeats", 5, "Timed rounds per round form.", lower_bound=1)

LEARNING_RATE = 0.1


class Spec(NamedTuple):
  """An LSTM language model and its client batch."""

  vocab: int
  embed: int
  hidden: tuple[int, ...]
  projection: int | None
  batch: int
  steps: int
  unrolls: tuple[int, ...]  # the unroll factors to time
  clients: tuple[int, ...]  # the vmap widths to time


SPECS = {
  "char": Spec(90, 8, (256, 256), None, 4, 80, (1, 2, 4, 8, 16), (1, 2, 4, 8)),
  "word": Spec(10_004, 96, (670,), 96, 16, 20, (1, 2, 4), (1, 2, 4)),
}


def step_gflop(spec: Spec) -> float:
  """Analytic GFLOP of one training step (3x the forward's matrix products)."""
  tokens = spec.batch * spec.steps
  forward, width = 0, spec.embed
  for hidden in spec.hidden:
    forward += 2 * tokens * (width * 4 * hidden + hidden * 4 * hidden)
    width = hidden
  for out in ((spec.projection,) if spec.projection else ()) + (spec.vocab,):
    forward += 2 * tokens * width * out
    width = out
  return 3 * forward / 1e9


class LanguageModel(nn.Module):
  """Tokens [B, T] -> logits [B, T, vocab]: embedding, LSTM layers made by `layer(H)`,
  the optional projection, dense to the vocabulary."""

  spec: Spec
  layer: Callable[[int], nn.Module]

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.spec.vocab, self.spec.embed)(tokens)
    for hidden in self.spec.hidden:
      x = self.layer(hidden)(x)
    if self.spec.projection:
      x = nn.Dense(self.spec.projection)(x)
    return nn.Dense(self.spec.vocab)(x)


def flax_model(spec: Spec) -> nn.Module:
  """The model with Flax's `nn.RNN(nn.OptimizedLSTMCell)` layers."""
  return LanguageModel(spec, lambda hidden: nn.RNN(nn.OptimizedLSTMCell(hidden)))


def fused_model(spec: Spec, unroll: int = 1, hand_gradient: bool = True) -> nn.Module:
  """The model with `models.lstm.LSTM` layers."""
  return LanguageModel(
    spec, lambda hidden: lstm.LSTM(hidden, unroll=unroll, hand_gradient=hand_gradient)
  )


def sgd_step(module: nn.Module) -> Callable:
  """step(params, tokens, labels, mask) -> params after one SGD step on the masked loss."""

  def step(params, tokens, labels, mask):
    # apply without `mutable` returns the logits alone.
    logits = lambda p: cast(jax.Array, module.apply(p, tokens))
    grads = jax.grad(lambda p: masked_loss(logits(p), labels, mask))(params)
    return jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)

  return step


def batches(spec: Spec, shape: tuple[int, ...], seed: int = 0):
  """Random (tokens, labels, mask) of shape [*shape, batch, steps]."""
  rng = np.random.default_rng(seed)
  full = (*shape, spec.batch, spec.steps)
  return (
    rng.integers(0, spec.vocab, full).astype(np.int32),
    rng.integers(0, spec.vocab, full).astype(np.int32),
    np.ones(full, bool),
  )


def compiled(fn: Callable, *args):
  """`jax.jit(fn)` compiled for `args`, and the seconds lowering and compiling took."""
  start = time.perf_counter()
  out = jax.jit(fn).lower(*args).compile()
  return out, time.perf_counter() - start


def interleaved_timings(
  runs: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True
) -> dict[str, dict[str, float]]:
  """Seconds of each `run()` (result blocked on), timed in turns, `repeats` times each.

  Per run: `median_s`, `best_s` and `cores_busy` (median of the process's CPU time over
  the wall time, which other jobs' load does not inflate).
  """
  if warm_up:
    for run in runs.values():
      jax.block_until_ready(run())
  times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      start, cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(run())
      wall = time.perf_counter() - start
      times[name].append((wall, (time.process_time() - cpu) / wall))
  return {
    name: {
      "median_s": statistics.median(w for w, _ in t),
      "best_s": min(w for w, _ in t),
      "cores_busy": statistics.median(c for _, c in t),
    }
    for name, t in times.items()
  }


MATMULS = {"matmul 2048^2": (2048, 2048, 2048), "matmul 320x256x1024": (320, 256, 1024)}


def matmul_runs() -> dict[str, Callable[[], object]]:
  """run() of each float32 product of `MATMULS` ([m, k] x [k, n] `jnp.dot`)."""
  rng = np.random.default_rng(0)
  runs: dict[str, Callable[..., object]]  # each called with no arguments
  dot, runs = jax.jit(jnp.dot), {}
  for name, (m, k, n) in MATMULS.items():
    a, b = (jnp.asarray(rng.random(s, dtype=np.float32)) for s in ((m, k), (k, n)))
    runs[name] = lambda a=a, b=b: dot(a, b)
  return runs


def matmul_rates(timings: dict[str, dict[str, float]]) -> dict[str, float]:
  """GFLOP/s of each product of `MATMULS` from its median time in `timings`."""
  return {
    name: 2 * m * k * n / timings[name]["median_s"] / 1e9 for name, (m, k, n) in MATMULS.items()
  }


def step_forms(spec: Spec, quick: bool) -> list[tuple[str, nn.Module, int, int | None, bool]]:
  """(form, module, unroll, clients per step (None: no vmap), hand gradient) to time."""
  unrolls = spec.unrolls[:2] if quick else spec.unrolls
  clients = spec.clients[:2] if quick else spec.clients
  forms: list[tuple[str, nn.Module, int, int | None, bool]] = [
    ("flax nn.RNN", flax_model(spec), 1, None, False),
    ("fused, autodiff", fused_model(spec, 1, False), 1, None, False),
  ]
  forms += [(f"fused, unroll {u}", fused_model(spec, u), u, None, True) for u in unrolls]
  forms += [(f"fused, vmap {c}", fused_model(spec, 1), 1, c, True) for c in clients]
  return forms


def time_step_forms(name: str, spec: Spec, quick: bool, repeats: int, steps: int) -> list[dict]:
  """ms per client-step of every step form of one model, timed in alternation."""
  runs, records = {}, []
  for form, module, unroll, clients, hand in step_forms(spec, quick):
    tokens, labels, mask = batches(spec, () if clients is None else (clients,))
    params = module.init(jax.random.key(0), tokens if clients is None else tokens[0])
    step = sgd_step(module)
    if clients is not None:
      params = jax.tree.map(lambda a: np.stack([a] * clients), params)
      step = jax.vmap(step)
    fn, compile_s = compiled(step, params, tokens, labels, mask)

    def run(fn=fn, params=params, data=(tokens, labels, mask)):
      for _ in range(steps):
        params = fn(params, *data)
      return params

    runs[form] = run
    records.append(
      {
        "section": "step",
        "model": name,
        "form": form,
        "unroll": unroll,
        "clients_per_step": clients or 1,
        "vmap": clients is not None,
        "hand_gradient": hand,
        "compile_s": compile_s,
        "gflop_per_client_step": step_gflop(spec),
      }
    )
  timings = interleaved_timings({**runs, **matmul_runs()}, repeats)
  rates = matmul_rates(timings)
  for record in records:
    timing, per = timings[record["form"]], steps * record["clients_per_step"]
    record["ms_per_client_step"] = 1e3 * timing["median_s"] / per
    record["best_ms_per_client_step"] = 1e3 * timing["best_s"] / per
    record["cores_busy"] = timing["cores_busy"]
    record["gflops"] = record["gflop_per_client_step"] / timing["median_s"] * per
    record["matmul_gflops"] = rates["matmul 2048^2"]
    record["shaped_matmul_gflops"] = rates["matmul 320x256x1024"]
    record["matmul_cores_busy"] = timings["matmul 2048^2"]["cores_busy"]
    record["fraction_of_matmul"] = record["gflops"] / record["matmul_gflops"]
  return records


def round_forms(spec: Spec, clients: int, num_batches: int) -> dict[str, Callable[[], object]]:
  """name -> run() of one round: every client one epoch from the same parameters."""
  tokens, labels, mask = batches(spec, (clients, num_batches), seed=1)
  reference, fused = flax_model(spec), fused_model(spec, 1)
  params = {m: m.init(jax.random.key(0), tokens[0, 0]) for m in (reference, fused)}
  steps = {m: jax.jit(sgd_step(m)) for m in (reference, fused)}
  step = sgd_step(fused)

  def client_loop(model, c):
    local = params[model]
    for b in range(num_batches):
      local = steps[model](local, tokens[c, b], labels[c, b], mask[c, b])
    return jax.block_until_ready(local)

  def client_scan(p, x, y, m):
    return jax.lax.scan(lambda p, batch: (step(p, *batch), None), p, (x, y, m))[0]

  scan = jax.jit(client_scan)
  scan_all = jax.jit(
    lambda p, x, y, m: jax.tree.map(
      lambda a: a.mean(axis=0), jax.vmap(client_scan, in_axes=(None, 0, 0, 0))(p, x, y, m)
    )
  )
  scan_one = lambda c: jax.block_until_ready(scan(params[fused], tokens[c], labels[c], mask[c]))
  pool = ThreadPoolExecutor(2)
  return {
    "plain loop, flax nn.RNN step": lambda: [client_loop(reference, c) for c in range(clients)],
    "plain loop, fused step": lambda: [client_loop(fused, c) for c in range(clients)],
    "2 threads, fused step loop": lambda: list(
      pool.map(lambda c: client_loop(fused, c), range(clients))
    ),
    "lax.scan per client": lambda: [scan_one(c) for c in range(clients)],
    "lax.scan per client, 2 threads": lambda: list(pool.map(scan_one, range(clients))),
    f"vmap over {clients} clients of lax.scan": lambda: scan_all(
      params[fused], tokens, labels, mask
    ),
  }


def time_round_forms(
  name: str, spec: Spec, clients: int, num_batches: int, repeats: int
) -> list[dict]:
  """Seconds per round of every round form, timed in alternation; first-call seconds."""
  runs = round_forms(spec, clients, num_batches)
  first = {}
  for form, run in runs.items():
    start = time.perf_counter()
    jax.block_until_ready(run())
    first[form] = time.perf_counter() - start
  timings = interleaved_timings({**runs, **matmul_runs()}, repeats, warm_up=False)
  rate = matmul_rates(timings)["matmul 2048^2"]
  loop_ref, loop_fused = (
    timings["plain loop, flax nn.RNN step"]["median_s"],
    timings["plain loop, fused step"]["median_s"],
  )
  records = []
  for form in runs:
    s = timings[form]["median_s"]
    gflops = clients * num_batches * step_gflop(spec) / s
    records.append(
      {
        "section": "round",
        "model": name,
        "form": form,
        "clients": clients,
        "batches_per_client": num_batches,
        "round_s": s,
        "best_round_s": timings[form]["best_s"],
        "cores_busy": timings[form]["cores_busy"],
        "first_call_s": first[form],
        "x_faster_than_fused_loop": loop_fused / s,
        "x_faster_than_flax_loop": loop_ref / s,
        "gflops": gflops,
        "matmul_gflops": rate,
        "fraction_of_matmul": gflops / rate,
        "matmul_cores_busy": timings["matmul 2048^2"]["cores_busy"],
      }
    )
  return records


def print_tables(machine: dict, step_records: list[dict], round_records: list[dict]) -> None:
  print(
    f"\nload average {machine['loadavg_before'][0]:.2f} before, "
    f"{machine['loadavg_after'][0]:.2f} after; float32 2048^2 matmul "
    f"{machine['matmul_gflops_before']:.0f} GFLOP/s before, "
    f"{machine['matmul_gflops_after']:.0f} after. Step forms: median of "
    f"{machine['repeats']} timings of {machine['steps_per_timing']} steps; 'matmul': the "
    f"2048^2 rate timed among them (cores busy: "
    f"{step_records[0]['matmul_cores_busy'] if step_records else float('nan'):.2f}).\n"
  )
  print(
    f"{'model':<5} {'form':<16} {'GFLOP':>6} {'ms/step':>8} {'best':>6} {'GFLOP/s':>8} "
    f"{'matmul':>7} {'of matmul':>10} {'cores':>6} {'compile s':>10}"
  )
  for r in step_records:
    print(
      f"{r['model']:<5} {r['form']:<16} {r['gflop_per_client_step']:>6.2f} "
      f"{r['ms_per_client_step']:>8.1f} {r['best_ms_per_client_step']:>6.1f} "
      f"{r['gflops']:>8.1f} {r['matmul_gflops']:>7.0f} {r['fraction_of_matmul']:>10.2f} "
      f"{r['cores_busy']:>6.2f} {r['compile_s']:>10.2f}"
    )
  if round_records:
    r0 = round_records[0]
    print(
      f"\nRound: {r0['model']}, {r0['clients']} clients x {r0['batches_per_client']} "
      f"batches, median of {machine['round_repeats']}; matmul "
      f"{r0['matmul_gflops']:.0f} GFLOP/s timed among them (cores busy "
      f"{r0['matmul_cores_busy']:.2f}):\n"
    )
    print(
      f"{'form':<36} {'s/round':>8} {'best':>6} {'x fused loop':>13} {'x flax loop':>12} "
      f"{'of matmul':>10} {'cores':>6} {'first s':>8}"
    )
    for r in round_records:
      print(
        f"{r['form']:<36} {r['round_s']:>8.2f} {r['best_round_s']:>6.2f} "
        f"{r['x_faster_than_fused_loop']:>13.2f} {r['x_faster_than_flax_loop']:>12.2f} "
        f"{r['fraction_of_matmul']:>10.2f} {r['cores_busy']:>6.2f} "
        f"{r['first_call_s']:>8.2f}"
      )


def main(argv):
  del argv
  cli.check_json_path(FLAGS.json)
  names = FLAGS.models[:1] if FLAGS.quick else FLAGS.models
  if unknown := sorted(set(names + [FLAGS.round_model]) - set(SPECS) - {""}):
    raise SystemExit(f"error: unknown models {unknown}; valid: {sorted(SPECS)}.")
  repeats = min(FLAGS.repeats, 3) if FLAGS.quick else FLAGS.repeats
  clients = min(FLAGS.round_clients, 4) if FLAGS.quick else FLAGS.round_clients
  num_batches = min(FLAGS.round_batches, 3) if FLAGS.quick else FLAGS.round_batches
  round_repeats = min(FLAGS.round_repeats, 3) if FLAGS.quick else FLAGS.round_repeats
  load_before = os.getloadavg()
  before = matmul_gflops()
  step_records = [
    r
    for name in names
    for r in time_step_forms(name, SPECS[name], FLAGS.quick, repeats, FLAGS.steps)
  ]
  round_records = (
    time_round_forms(
      FLAGS.round_model, SPECS[FLAGS.round_model], clients, num_batches, round_repeats
    )
    if FLAGS.round_model
    else []
  )
  after = matmul_gflops()
  machine = {
    "section": "machine",
    "matmul_gflops_before": before,
    "matmul_gflops_after": after,
    "loadavg_before": load_before,
    "loadavg_after": os.getloadavg(),
    "repeats": repeats,
    "steps_per_timing": FLAGS.steps,
    "round_repeats": round_repeats,
    "quick": FLAGS.quick,
    "backend": jax.default_backend(),
    "jax": jax.__version__,
    "cpu_count": os.cpu_count(),
  }
  print_tables(machine, step_records, round_records)
  cli.write_json(FLAGS.json, [machine] + step_records + round_records)


if __name__ == "__main__":
  app.run(main)
