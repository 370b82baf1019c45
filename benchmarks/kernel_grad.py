"""The CNN's costliest op on XLA:CPU, its second convolution's kernel gradient, three ways.

  python -m benchmarks.kernel_grad --json=benchmarks/kernel_grad.json
  taskset -c 0 python -m benchmarks.kernel_grad --json=benchmarks/kernel_grad_one_core.json

The gradient of a 5x5 SAME convolution's kernel, input [20, 14, 14, 32] and output
gradient [20, 14, 14, 64] (batch 20 of the FedAvg CNN): 0.401 GFLOP, the size of the
forward convolution. Forms, all the same values (the largest difference is printed):
- `xla`: `jax.vjp` of `lax.conv_general_dilated` (what `nn.Conv`'s backward pass runs);
- `patches`: the 25 shifted copies of the image (`models.shifted_patches`) as a
  [B*H*W, 25*C] matrix, transposed times the output gradient (what `cnn_shifted` runs);
- `rows`: 5 horizontal shifts on the channel axis with the height axis leading
  ([H+4, B, W, 5*C]); then each kernel row is the output gradient [out, H*B*W] times a
  contiguous slice of those rows: 5 products, no 25-fold copy.
The float32 2048x2048 `jnp.dot` is timed alongside. Run under `taskset -c 0` for one
core: what each client gets when `sequential` trains two clients on a 2-core machine.
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import cli
from benchmarks.machine import matmul_gflops
from fedjax_compress.models import shifted_patches

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_integer("repeats", 7, "Timings per form; the median is reported.", lower_bound=1)
flags.DEFINE_integer("calls", 10, "Calls per timing.", lower_bound=1)

BATCH, SIZE, IN, OUT, K = 20, 14, 32, 64, 5


def xla_form(x, g):
  conv = lambda k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.vjp(conv, jnp.zeros((K, K, IN, OUT), x.dtype))[1](g)[0]


def patches_form(x, g):
  p = shifted_patches(x, (K, K)).reshape(-1, K * K * IN)
  return (p.T @ g.reshape(-1, OUT)).reshape(K, K, IN, OUT)


def rows_form(x, g):
  padded = jnp.pad(x, ((0, 0), (K // 2, K // 2), (K // 2, K // 2), (0, 0)))
  by_row = jnp.transpose(padded, (1, 0, 2, 3))  # [H+4, B, W+4, C]
  rows = jnp.concatenate([by_row[:, :, j:j + SIZE] for j in range(K)], axis=-1)
  g_t = jnp.transpose(g, (3, 1, 0, 2)).reshape(OUT, -1)  # [out, H*B*W]
  per_row = [g_t @ rows[i:i + SIZE].reshape(-1, K * IN) for i in range(K)]  # [out, K*C]
  return jnp.transpose(jnp.stack(per_row).reshape(K, OUT, K, IN), (0, 2, 3, 1))


FORMS = {"xla": xla_form, "patches": patches_form, "rows": rows_form}


def median_ms(f, *args) -> float:
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    for _ in range(FLAGS.calls):
      out = f(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / FLAGS.calls * 1e3)
  return statistics.median(times)


def main(argv):
  del argv
  cli.check_json_path(FLAGS.json)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(BATCH, SIZE, SIZE, IN)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(BATCH, SIZE, SIZE, OUT)), jnp.float32)
  gflop = 2 * BATCH * SIZE * SIZE * IN * OUT * K * K / 1e9
  cores = len(os.sched_getaffinity(0))
  matmul = matmul_gflops()
  reference = jax.jit(xla_form)(x, g)
  records = []
  for name, form in FORMS.items():
    f = jax.jit(form)
    ms = median_ms(f, x, g)
    records.append({"form": name, "ms": ms, "gflops": gflop / ms * 1e3,
                    "of_matmul": gflop / ms * 1e3 / matmul, "matmul_gflops": matmul,
                    "cores": cores, "max_abs_diff": float(jnp.max(jnp.abs(f(x, g) - reference)))})
  print(f"Kernel gradient of a 5x5 conv, [{BATCH},{SIZE},{SIZE},{IN}] -> {OUT} ({gflop:.3f} "
        f"GFLOP), {cores} core(s), float32 matmul {matmul:.0f} GFLOP/s\n")
  print(f"{'form':10s} {'ms':>7s} {'GFLOP/s':>8s} {'of matmul':>10s} {'max |diff|':>11s}")
  for r in records:
    print(f"{r['form']:10s} {r['ms']:7.2f} {r['gflops']:8.1f} {r['of_matmul']:10.2f} "
          f"{r['max_abs_diff']:11.1e}")
  cli.write_json(FLAGS.json, records, indent=1)


if __name__ == "__main__":
  app.run(main)
