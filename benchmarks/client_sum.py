"""Summing ten CNN updates over the client axis on XLA:CPU, written three ways.

  python -m benchmarks.client_sum --json=benchmarks/client_sum.json

Why `aggregators.core.sum_over_clients` is a matrix-vector product: the fused
`jnp.sum(x * w[:, None, None], axis=0)` was pathologically slow on XLA:CPU.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import cli
from fedjax_compress.aggregators.core import sum_over_clients

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_integer("clients", 10, "Clients.")
flags.DEFINE_integer("repeats", 5, "Timings per form; the median is reported.")


def main(argv):
  del argv
  cli.check_json_path(FLAGS.json)
  # The CNN's dense kernel, the largest leaf of an update: [clients, 3136, 512].
  x = jnp.asarray(np.random.default_rng(0).normal(size=(FLAGS.clients, 3136, 512)), jnp.float32)
  w = jnp.arange(1.0, FLAGS.clients + 1)
  forms = {
      "jnp.sum(x * w[:, None, None], axis=0)": lambda x, w: jnp.sum(x * w[:, None, None], axis=0),
      "jnp.sum(x, axis=0) (unweighted)": lambda x, w: jnp.sum(x, axis=0),
      "sum_over_clients(x, w): w @ x.reshape(C, -1)": sum_over_clients,
  }
  records = []
  reference = None
  for name, f in forms.items():
    f = jax.jit(f)
    out = jax.block_until_ready(f(x, w))
    times = []
    for _ in range(FLAGS.repeats):
      start = time.perf_counter()
      jax.block_until_ready(f(x, w))
      times.append(time.perf_counter() - start)
    records.append({"form": name, "ms": 1e3 * statistics.median(times), "backend": jax.default_backend()})
    if reference is None:
      reference = out
  base = records[-1]["ms"]
  print(f"\nSum of {FLAGS.clients} updates of shape (3136, 512), backend {jax.default_backend()}, "
        f"median of {FLAGS.repeats}:\n")
  for r in records:
    r["ratio_to_matvec"] = r["ms"] / base
    print(f"{r['form']:<48} {r['ms']:>9.1f} ms  {r['ratio_to_matvec']:>8.1f}x")
  cli.write_json(FLAGS.json, records)


if __name__ == "__main__":
  app.run(main)
