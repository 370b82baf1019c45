"""Per-step cost of one CNN SGD step (batch 20) in the forms a round could take.

  python -m benchmarks.step_forms --json=benchmarks/step_forms.json

Forms: a Python loop of a jitted step (with and without buffer donation), the same
steps inside `lax.scan` (rolled and unrolled), and a `vmap` over 10 clients with
distinct parameters; for each model of `--models` (the CNN's convolution forms), each
ratio against the first model's loop. These numbers chose the CPU strategy
(`execution.resolve`).
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
import optax
from absl import app, flags

from benchmarks import cli
from fedjax_compress import models

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_integer("steps", 8, "Steps per timing.")
flags.DEFINE_integer("repeats", 5, "Timings per form; the median is reported.")
flags.DEFINE_list("models", ["cnn_reference", "cnn", "cnn_shifted"], "Models (models.create_model names).")


def time_forms(model_name: str) -> list[dict]:
  """ms per client-step of every form, for one model."""
  model = models.create_model(model_name, 10)
  params = model.init(jax.random.key(0))
  opt = optax.sgd(0.02)
  n = FLAGS.steps
  rng = np.random.default_rng(0)
  x = rng.random((n, 20, 28, 28, 1), dtype=np.float32)
  y = rng.integers(0, 10, (n, 20)).astype(np.int32)
  mask = np.ones((n, 20), bool)

  def step(p, s, xb, yb, mb):
    g = jax.grad(lambda p: models.masked_loss(model.apply(p, xb), yb, mb))(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  state = opt.init(params)
  loop_step = jax.jit(step)
  donating_step = jax.jit(step, donate_argnums=(0, 1))

  def loop(f):
    def run():
      p, s = jax.tree.map(lambda a: a.copy(), (params, state))
      for i in range(n):
        p, s = f(p, s, x[i], y[i], mask[i])
      return p
    return run

  def scanned(unroll):
    f = jax.jit(lambda p, s: jax.lax.scan(lambda c, b: (step(*c, *b), None), (p, s),
                                          (x, y, mask), unroll=unroll)[0])
    return lambda: f(params, state)

  clients = 10
  stacked = jax.tree.map(lambda a: np.stack([a] * clients), (params, state))
  vmapped = jax.jit(jax.vmap(step))
  vx, vy, vm = (np.stack([a[0]] * clients) for a in (x, y, mask))

  forms = {
      "python loop of jitted step": (loop(loop_step), n),
      "python loop, donated buffers": (loop(donating_step), n),
      "lax.scan": (scanned(1), n),
      "lax.scan, unroll=True": (scanned(True), n),
      f"vmap over {clients} clients (per client-step)": (lambda: vmapped(*stacked, vx, vy, vm), clients),
  }
  records = []
  for name, (run, count) in forms.items():
    start = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - start
    times = []
    for _ in range(FLAGS.repeats):
      start = time.perf_counter()
      jax.block_until_ready(run())
      times.append((time.perf_counter() - start) / count)
    records.append({"model": model_name, "form": name,
                    "ms_per_step": 1e3 * statistics.median(times),
                    "first_call_s": first, "backend": jax.default_backend()})
  return records


def main(argv):
  del argv
  cli.check_model_names(FLAGS.models)
  cli.check_json_path(FLAGS.json)
  records = [r for name in FLAGS.models for r in time_forms(name)]
  base = records[0]["ms_per_step"]
  print(f"\nOne FedAvg CNN SGD step, batch 20, backend {jax.default_backend()}, "
        f"median of {FLAGS.repeats}; 'x loop': against {FLAGS.models[0]}'s loop:\n")
  print(f"{'model':<14} {'form':<45} {'ms/step':>8} {'x loop':>7} {'first call s':>13}")
  for r in records:
    r["ratio_to_loop"] = r["ms_per_step"] / base
    print(f"{r['model']:<14} {r['form']:<45} {r['ms_per_step']:>8.1f} {r['ratio_to_loop']:>7.2f} "
          f"{r['first_call_s']:>13.2f}")
  cli.write_json(FLAGS.json, records)


if __name__ == "__main__":
  app.run(main)
