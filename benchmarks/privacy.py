"""Private mean estimation: central Gaussian, DDG and Skellam at equal epsilon across bit widths.

  python -m benchmarks.privacy --json=benchmarks/privacy.json
  python -m benchmarks.privacy --json=/tmp/privacy.json --quick
  python -m benchmarks.privacy --json=PATH --deltas=/tmp/femnist_deltas.npz

One round of n clients, each vector clipped to L2 norm C = 1, everyone participating
(no sampling), accounted with dp-accounting's RDP accountant at `--delta`. For each
target epsilon the noise multiplier of every mechanism and bit width is calibrated to
it (`privacy.plan.make_plan`; DDG's and Skellam's gamma from the bit width), so the
mechanisms are compared at equal epsilon. The error is the normalised error of the
decoded mean, ||mean_hat - mean||^2 / mean_i ||x_i||^2 over the clipped inputs (the
normalisation of `benchmarks.dme`: the mean of random vectors is near 0, so its own
norm would not do), averaged over trials; `bits` is the
width of a coordinate on the wire (32 for the central mechanism's float32). A
distributed mechanism meets central DP when its error ratio to the central one nears 1.

Inputs: i.i.d. N(0, 1) vectors (clipped), and, with `--deltas`, real FEMNIST client
deltas of one FedAvg round (the .npz that `python -m benchmarks.dme --deltas=PATH`
captures): its first `--clients` rows, each a client's whole flattened delta (d is the
CNN's size there, not `--dim`).

A configuration that cannot be built is recorded with its reason (`error`): a bit width
too small for the rounding of n clients, a target epsilon that no noise reaches at that
width, a Skellam mean above the sampler's range.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import cli
from fedjax_compress.aggregators.presets import dp_aggregator
from fedjax_compress.privacy.distributed import distributed_dp

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Write the records here.")
flags.DEFINE_bool("quick", False, "d = 2^12, 2 epsilons, 4 bit widths, 1 trial.")
flags.DEFINE_integer("clients", 100, "Clients whose mean is estimated.")
flags.DEFINE_integer("dim", 2**14, "Coordinates of the Gaussian inputs.")
flags.DEFINE_list("epsilons", ["1", "4", "16"], "Target epsilons (one round).")
flags.DEFINE_list("bits", ["8", "10", "12", "14", "16", "18", "20"], "Distributed bit widths.")
flags.DEFINE_float("delta", 1e-5, "delta of the guarantee.")
flags.DEFINE_float("clip_norm", 1.0, "L2 clip of each client's vector.")
flags.DEFINE_integer("trials", 2, "Independent trials per configuration.")
flags.DEFINE_string("deltas", None, "FEMNIST client deltas (.npz from benchmarks.dme).")
flags.DEFINE_integer(
  "skellam_max_bits",
  16,
  "Skip Skellam above this width: its sampler's "
  "cost grows with its mean, 4x a bit (recorded as skipped).",
)

MECHANISMS = ("central_gaussian", "ddg", "skellam")


def gaussian_inputs(n: int, d: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def clipped(x: np.ndarray, clip_norm: float) -> np.ndarray:
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-30))


def build(mechanism: str, bits: int | None, epsilon: float, n: int):
  """The aggregator, calibrated to `epsilon` for one round of all n clients."""
  common = dict(
    clip_norm=FLAGS.clip_norm, target_epsilon=epsilon, delta=FLAGS.delta, num_clients=n, rounds=1
  )
  if mechanism == "central_gaussian":
    return dp_aggregator(None, n, zeroing=False, **common)
  assert bits is not None  # the distributed mechanisms' width
  return distributed_dp(mechanism, bits=bits, clients_per_round=n, **common)


def measure(mechanism: str, bits: int | None, epsilon: float, x: np.ndarray, trials: int):
  """One configuration's record fields (or its error)."""
  n, d = x.shape
  updates = {"x": jnp.asarray(x)}
  template = {"x": jax.ShapeDtypeStruct((d,), jnp.float32)}
  try:
    aggregator = build(mechanism, bits, epsilon, n)
    plan = aggregator.privacy(template)
  except ValueError as e:
    return {"error": str(e)}
  inputs_clipped = clipped(x, FLAGS.clip_norm)
  true_mean = inputs_clipped.mean(axis=0)
  scale = float(np.mean(np.sum(inputs_clipped**2, axis=1)))  # mean ||x_i||^2
  apply = jax.jit(
    lambda key: aggregator.apply(aggregator.init(template), updates, jnp.ones(n), key)
  )
  errors, seconds = [], []
  for t in range(trials):
    start = time.perf_counter()
    mean, _, measurements = jax.block_until_ready(apply(jax.random.key(t)))
    seconds.append(time.perf_counter() - start)
    errors.append(float(np.sum((np.asarray(mean["x"]) - true_mean) ** 2) / scale))
  uplink = int(np.asarray(measurements["uplink_bits"])[0])
  return {
    "epsilon": float(plan.epsilons()[-1]),
    "noise_multiplier": plan.noise_multiplier,
    "gamma": plan.gamma,
    "mse": float(np.mean(errors)),
    "mse_trials": errors,
    "uplink_bits_per_client": uplink,
    "bits_per_coordinate": uplink / d,
    "seconds": float(np.median(seconds[1:] or seconds)),
  }


def inputs() -> list[tuple[str, np.ndarray]]:
  n = FLAGS.clients
  d = 2**12 if FLAGS.quick else FLAGS.dim
  out = [("gaussian", gaussian_inputs(n, d))]
  if FLAGS.deltas:
    deltas = np.load(FLAGS.deltas)["deltas"]
    if deltas.shape[0] < n:
      raise SystemExit(
        f"error: --deltas={FLAGS.deltas} holds {deltas.shape[0]} clients, fewer "
        f"than --clients={n}: capture more or lower --clients."
      )
    out.append(("femnist", deltas[:n].astype(np.float32)))
  return out


def run() -> list[dict]:
  epsilons = [float(e) for e in (FLAGS.epsilons[:2] if FLAGS.quick else FLAGS.epsilons)]
  widths = [int(b) for b in FLAGS.bits]
  if FLAGS.quick:
    widths = widths[::2][:4]
  trials = 1 if FLAGS.quick else FLAGS.trials
  records = []
  for name, x in inputs():
    for epsilon in epsilons:
      configs = [("central_gaussian", None)] + [(m, b) for m in ("ddg", "skellam") for b in widths]
      for mechanism, bits in configs:
        if mechanism == "skellam" and bits > FLAGS.skellam_max_bits:
          continue
        record = {
          "input": name,
          "mechanism": mechanism,
          "bits": 32 if bits is None else bits,
          "clients": x.shape[0],
          "dim": x.shape[1],
          "target_epsilon": epsilon,
          "delta": FLAGS.delta,
          "clip_norm": FLAGS.clip_norm,
          "trials": trials,
          **measure(mechanism, bits, epsilon, x, trials),
        }
        records.append(record)
        print(_row(record), flush=True)
  return records


def _row(r: dict) -> str:
  head = f"| {r['input']} | {r['target_epsilon']:g} | {r['mechanism']} | {r['bits']} | "
  if "error" in r:
    return head + f"- | - | - | {r['error'][:90]} |"
  return head + (
    f"{r['epsilon']:.3f} | {r['noise_multiplier']:.4g} | {r['mse']:.4g} | {r['seconds']:.2f} s |"
  )


def main(argv):
  del argv
  cli.check_json_path(FLAGS.json)
  if FLAGS.deltas and not os.path.isfile(FLAGS.deltas):
    raise SystemExit(
      f"error: --deltas={FLAGS.deltas}: no such file; capture it with "
      f"python -m benchmarks.dme --deltas={FLAGS.deltas}."
    )
  for name in ("epsilons", "bits"):
    try:
      [float(v) for v in getattr(FLAGS, name)]
    except ValueError:
      raise SystemExit(
        f"error: --{name}={','.join(getattr(FLAGS, name))}: give numbers separated by commas."
      ) from None
  print(
    "| input | target eps | mechanism | bits | epsilon | z | mse | time / note |\n"
    "|---|---|---|---|---|---|---|---|"
  )
  records = run()
  cli.write_json(FLAGS.json, {"platform": jax.default_backend(), "records": records})


if __name__ == "__main__":
  app.run(main)
