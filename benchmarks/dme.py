"""Distributed mean estimation: error against measured bits for every compressor.

  python -m benchmarks.dme --quick --json=/tmp/dme_quick.json
  python -m benchmarks.dme --json=benchmarks/dme.json --deltas=/tmp/femnist_deltas.npz \
      --png=/tmp/dme.png

For each compressor, bit width and input: vNMSE = E||x_hat - x||^2 / ||x||^2 of one
client (mean over clients and trials) and the NMSE of the mean of n clients,
||mean x_hat - mean x||^2 / mean ||x||^2 (DRIVE's normalization: ~vNMSE / n when the
errors are independent and unbiased). Bits per coordinate are measured on the encoded
arrays (`measured_bits`: entropy-coded streams at their true length) and divided by d.

Inputs: i.i.d. N(0, 1) and LogNormal(0, 1) vectors (d = 2^16 and 2^20; `--quick`:
2^16 only and fewer trials), and, with `--deltas`, real client deltas of one FedAvg round
of the CNN on FEMNIST digits (captured into that file when it does not exist; each
client's delta flattened into one vector). Shared randomness is derived as `encoded_sum`
derives it: one key for the round's commuting stages (the rotation), one per client
for the others (the dither). Also times the host Huffman coder (`entropy_code`) on one
client's 4-bit dithered codes.

Prints the table; writes files only where told: the records to `--json`, a plot of
vNMSE against bits with the rate-distortion floor of a unit Gaussian, D(b) = 2^(-2b),
to `--png`. Results: benchmarks/RESULTS.md, "Distributed mean estimation".
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import cli
from fedjax_compress import compression
from fedjax_compress.compression.entropy_code import decode_stream, encode_stream
from fedjax_compress.compression.qsgd import level_bits

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_string("png", None, "Draw vNMSE against bits into this PNG (default: no plot).")
flags.DEFINE_bool("quick", False, "d = 2^16 only, 2 trials.")
flags.DEFINE_integer("clients", 10, "Clients whose mean is estimated.")
flags.DEFINE_integer("trials", None, "Independent trials (default: 2 quick, 4 full).")
flags.DEFINE_string("deltas", None, "FEMNIST client deltas (.npz); captured here if missing.")
flags.DEFINE_string(
  "data_dir", None, "LEAF FEMNIST folder; default ../shared/data/femnist_leaf_niid05."
)
flags.DEFINE_list("only", None, "Run only these compressor names.")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "femnist_leaf_niid05"

# References on Gaussian inputs at d = 2^16 (EDEN paper; TFF's default quantizer).
REFERENCES = {
  ("drive", 1): 0.571,
  ("eden", 1): 0.571,
  ("eden", 2): 0.133,
  ("eden", 4): 0.0096,
  ("dithered_huffman", 4): 5.6e-3,
  ("uniform", 8): 1.85e-4,
}


def dithered_huffman(bits: int) -> compression.Stage:
  """Rotation, dithered codes of step sqrt(2 pi e) 2^-bits RMS, Huffman-coded.

  At high rate uniform codes of step D have entropy h(X) - log2 D; for a Gaussian,
  h = log2 sqrt(2 pi e), so this step aims at `bits` bits of entropy per value.
  """
  step = math.sqrt(2 * math.pi * math.e) * 2.0**-bits
  return compression.chain(
    compression.hadamard(), compression.dithered_codes(8, step=step), compression.entropy_code(8)
  )


def compressors(d: int):
  """(name, nominal bits, stage) for a vector of d values."""
  index_bits = math.ceil(math.log2(d))
  out = [
    ("drive", 1, compression.drive()),
    ("drive_biased", 1, compression.drive(unbiased=False)),
    ("scaled_sign", 1, compression.scaled_sign()),
    ("terngrad", 2, compression.terngrad()),
  ]
  out += [("eden", b, compression.eden(b)) for b in (1, 2, 3, 4)]
  out += [("qsgd", 1 + level_bits(s), compression.qsgd(s, bucket_size=512)) for s in (1, 3, 7)]
  out += [("uniform", b, compression.uniform_quantize(b)) for b in (2, 4, 8)]
  out += [("dithered", b, compression.dithered(b)) for b in (2, 4, 8)]
  out += [("dithered_huffman", b, dithered_huffman(b)) for b in (2, 3, 4)]
  out += [("lloyd_max", b, compression.lloyd_max(b)) for b in (2, 4)]
  out += [("top_k", b, compression.top_k(round(b * d / (32 + index_bits)))) for b in (1, 4)]
  out += [("rand_k", b, compression.rand_k(round(b * d / 32))) for b in (1, 4)]
  if FLAGS.only:
    out = [c for c in out if c[0] in FLAGS.only]
  return out


def evaluator(stage, n, d):
  """jit: (xs [n, d], key) -> (vnmse, nmse of the mean, mean bits per client)."""
  spec = jax.ShapeDtypeStruct((d,), jnp.float32)
  stage = compression.chain(stage)
  state = stage.init(spec)

  @jax.jit
  def run(xs, key):
    keys = jax.random.split(jax.random.fold_in(key, 0), n)
    common = jax.random.fold_in(key, 1)
    shared = compression.SharedKeys(
      common, jax.vmap(jax.random.fold_in, (None, 0))(common, jnp.arange(n))
    )
    # Each client's SharedKeys: the common key (closed over) and its own (mapped).
    enc = jax.vmap(lambda x, k, c: stage.encode(state, x, k, compression.SharedKeys(common, c)))(
      xs, keys, shared.client
    )
    x_hat = jax.vmap(lambda e, c: stage.decode(state, e, spec, compression.SharedKeys(common, c)))(
      enc, shared.client
    )
    norms = jnp.sum(xs * xs, axis=1)
    vnmse = jnp.mean(jnp.sum((x_hat - xs) ** 2, axis=1) / norms)
    nmse_mean = jnp.sum((x_hat.mean(0) - xs.mean(0)) ** 2) / jnp.mean(norms)
    bits = jax.vmap(compression.measured_bits)(enc)
    return vnmse, nmse_mean, jnp.mean(bits.astype(jnp.float32))

  return run


def synthetic(distribution, n, d, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) if distribution == "gaussian" else rng.lognormal(size=(n, d))
  return jnp.asarray(x, jnp.float32)


def capture_deltas(path: Path, n: int) -> np.ndarray:
  """One FedAvg round of the CNN on FEMNIST digits: each client's delta, flattened."""
  import optax  # pylint: disable=g-import-not-at-top
  from fedjax_compress import models  # pylint: disable=g-import-not-at-top
  from fedjax_compress.data import pipeline  # pylint: disable=g-import-not-at-top
  from fedjax_compress.data.sources import load_federated  # pylint: disable=g-import-not-at-top
  from fedjax_compress.learning import client, execution  # pylint: disable=g-import-not-at-top

  data = load_federated(
    "leaf", "train", data_dir=Path(FLAGS.data_dir or DEFAULT_DATA), only_digits=True
  )
  model = models.create_model("cnn", 10)
  ids = pipeline.sample_clients(data.client_ids, n, seed=0, round_num=0)
  batch = pipeline.round_batch(data, ids, batch_size=20, seed=0, round_num=0)
  params = model.init(jax.random.key(0))
  size = sum(a.size for a in jax.tree.leaves(params))

  def keep_delta(rows, context, outputs, index):
    flat = jnp.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree.leaves(outputs.delta)], 1)
    return rows.at[index].set(flat)

  runner = execution.SequentialClients(client.local_sgd(model, optax.sgd(0.02)), keep_delta)
  deltas = np.asarray(
    runner(
      jnp.zeros((n, size), jnp.float32),
      (),
      params,
      batch.x,
      batch.y,
      batch.mask,
      jax.random.split(jax.random.key(1), n),
    )
  )
  np.savez_compressed(path, deltas=deltas.astype(np.float32), clients=np.array(ids))
  return deltas


def coder_speed(d: int) -> dict:
  """Symbols per second of the host Huffman coder on one client's 4-bit dithered codes."""
  x = synthetic("gaussian", 1, d, 123)[0]
  stage = compression.chain(
    compression.hadamard(), compression.dithered_codes(8, step=math.sqrt(2 * math.pi * math.e) / 16)
  )
  codes = np.asarray(
    stage.encode(
      stage.init(jax.ShapeDtypeStruct((d,), jnp.float32)), x, jax.random.key(0), jax.random.key(1)
    ).values
  )
  start = time.perf_counter()
  stream = encode_stream(codes, 8)
  encode_s = time.perf_counter() - start
  start = time.perf_counter()
  assert np.array_equal(decode_stream(stream, d, 8), codes)
  decode_s = time.perf_counter() - start
  return {
    "d": d,
    "encode_symbols_per_s": d / encode_s,
    "decode_symbols_per_s": d / decode_s,
    "bits_per_symbol": stream.size / d,
  }


def run_inputs(name, n, d, make, trials, records):
  for compressor, bits, stage in compressors(d):
    run = evaluator(stage, n, d)
    start = time.perf_counter()
    results = [run(make(t), jax.random.key(1000 + t)) for t in range(trials)]
    seconds = time.perf_counter() - start
    vnmse, nmse_mean, client_bits = (float(np.mean([r[i] for r in results])) for i in range(3))
    record = {
      "compressor": compressor,
      "bits": bits,
      "bits_per_coord": client_bits / d,
      "distribution": name,
      "d": d,
      "clients": n,
      "trials": trials,
      "vnmse": vnmse,
      "nmse_mean": nmse_mean,
      "seconds": seconds,
    }
    if name == "gaussian" and (compressor, bits) in REFERENCES:
      record["reference_vnmse"] = REFERENCES[(compressor, bits)]
    records.append(record)
    print(
      f"{name:<9} d={d:<8} "
      f"{compressor:<17} b={bits}: {client_bits / d:7.4f} bits/coord, vNMSE {vnmse:.4g}, "
      f"NMSE(mean) {nmse_mean:.4g}  ({seconds:.1f} s)",
      flush=True,
    )


def print_table(records):
  header = (
    f"{'input':<9} {'d':>8} {'compressor':<17} {'b':>2} {'bits/coord':>10} "
    f"{'vNMSE':>10} {'NMSE mean':>10} {'reference':>10} {'floor 2^-2b':>11}"
  )
  print("\n" + header + "\n" + "-" * len(header))
  for r in records:
    ref = f"{r['reference_vnmse']:.4g}" if "reference_vnmse" in r else ""
    floor = 2.0 ** (-2 * r["bits_per_coord"])
    print(
      f"{r['distribution']:<9} {r['d']:>8} {r['compressor']:<17} {r['bits']:>2} "
      f"{r['bits_per_coord']:>10.4f} {r['vnmse']:>10.4g} {r['nmse_mean']:>10.4g} "
      f"{ref:>10} {floor:>11.3g}"
    )


def draw(records, path):
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  panels = sorted(
    {(r["distribution"], r["d"]) for r in records},
    key=lambda p: (["gaussian", "lognormal", "femnist"].index(p[0]), p[1]),
  )
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
  names = sorted({r["compressor"] for r in records})
  markers = dict(zip(names, "os^vD<>phX*P+x"))
  colors = {name: plt.cm.tab20(i % 20) for i, name in enumerate(names)}
  for ax, (dist, d) in zip(axes[0], panels):
    rows = [r for r in records if (r["distribution"], r["d"]) == (dist, d)]
    for name in names:
      pts = sorted((r["bits_per_coord"], r["vnmse"]) for r in rows if r["compressor"] == name)
      if pts:
        ax.plot(*zip(*pts), marker=markers[name], color=colors[name], label=name)
    b = np.linspace(0.03, 9, 200)
    ax.plot(b, 2.0 ** (-2 * b), "k--", label="D = 2^(-2b)")
    ax.set(
      xscale="linear",
      yscale="log",
      xlabel="measured bits per coordinate",
      ylabel="vNMSE",
      title=f"{dist}, d = {d}",
      xlim=(0, 9),
      ylim=(1e-6, 20),
    )
    ax.grid(True, which="both", alpha=0.3)
  axes[0][-1].legend(fontsize=7, loc="upper right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  print(f"wrote {path}")


def main(argv):
  del argv
  cli.check_json_path(FLAGS.json)
  cli.check_json_path(FLAGS.png, "png")
  n = FLAGS.clients
  trials = FLAGS.trials or (2 if FLAGS.quick else 4)
  dims = [2**16] if FLAGS.quick else [2**16, 2**20]
  records: list[dict] = []
  for d in dims:
    for dist in ("gaussian", "lognormal"):
      run_inputs(dist, n, d, lambda t, dist=dist, d=d: synthetic(dist, n, d, t), trials, records)
  if FLAGS.deltas:
    path = Path(FLAGS.deltas)
    deltas = np.load(path)["deltas"] if path.exists() else capture_deltas(path, n)
    xs = jnp.asarray(deltas, jnp.float32)
    run_inputs("femnist", xs.shape[0], xs.shape[1], lambda t: xs, trials, records)
  speed = coder_speed(dims[-1])
  print_table(records)
  print(
    f"\nHuffman coder (host numpy), d = {speed['d']}: encode "
    f"{speed['encode_symbols_per_s']:.3g} symbols/s, decode "
    f"{speed['decode_symbols_per_s']:.3g} symbols/s, {speed['bits_per_symbol']:.3f} bits/symbol"
  )
  env = {
    "backend": jax.default_backend(),
    "cpu_count": os.cpu_count(),
    "machine": platform.machine(),
    "jax": jax.__version__,
    "huffman": speed,
  }
  for r in records:
    r["env"] = env
  cli.write_json(FLAGS.json, records, indent=1)
  if FLAGS.png:
    draw(records, FLAGS.png)


if __name__ == "__main__":
  app.run(main)
