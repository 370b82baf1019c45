"""`check_stage`: what a stage or chain really does to Gaussian inputs, measured.

    from fedjax_compress import compression
    print(compression.format_report(compression.check_stage("hadamard,uniform_quantize(bits=2)")))

or from a shell (`--imports` loads modules that register stages):

    python -m fedjax_compress.compression.check_stage "hadamard,uniform_quantize(bits=2)" \
        --dim=4096 --clients=4 --seed=0

It encodes `clients` independent N(0, 1) vectors of `dim` values `draws` times, with
the keys `encoded_sum` would give them (a private key per client; shared keys common to
the round for the parts that declare `commutes_with_sum`, per client for the others),
and reports:

- the decoded shape and dtype, and whether they are the input's;
- vNMSE, E ||x_hat - x||^2 / ||x||^2, over clients and draws;
- bias, ||mean over draws of x_hat - x|| / ||x|| (over all clients), beside its noise
  floor sqrt(vNMSE / draws): an unbiased stage's bias is about the floor, and shrinks
  as 1 / sqrt(draws); a biased one's stays;
- bits per value: `measured_bits` of each client's encoding (streams at their length)
  over `dim`, so side information and padding count;
- `commutes_with_sum` as declared, and whether it holds: every part gets the round's
  common shared key, and decoding the sum of the clients' encodings (values summed in
  their dtype, side information that must be the same for every client) must give the
  sum of their decodes within float32 rounding (relative error <= 1e-4).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.base import Encoded, Spec, Stage, display_name
from fedjax_compress.compression.chain import chain

COMMUTE_TOLERANCE = 1e-4  # float32 sums in another order, relative to the sum's norm


class StageReport(NamedTuple):
  """What `check_stage` measured (see the module docstring for each quantity)."""

  stage: str  # the stage's name
  dim: int
  clients: int
  draws: int
  input_shape: tuple[int, ...]
  input_dtype: str
  decoded_shape: tuple[int, ...]
  decoded_dtype: str
  shape_ok: bool  # the decoded shape and dtype are the input's
  vnmse: float  # NaN unless shape_ok
  bias: float  # relative; NaN unless shape_ok
  bias_floor: float  # sqrt(vnmse / draws): the bias an unbiased stage shows by chance
  bits_per_value: float
  commutes_with_sum: bool  # as declared
  commutes_holds: bool  # as measured
  commute_error: float  # ||decode(sum) - sum(decode)|| / ||sum(decode)||; NaN if not run
  commute_note: str  # why it does not hold, or ""


def check_stage(
  stage_or_spec: Stage | str, *, dim: int = 4096, clients: int = 4, draws: int = 16, seed: int = 0
) -> StageReport:
  """Runs a `Stage` (or a spec string, as `parse_stages` reads it) on Gaussian inputs.

  `clients` >= 2 vectors of `dim` values, `draws` >= 2 encodings of each; `seed` sets
  the data and the keys. Raises `ValueError` for a bad spec or argument.
  """
  # Imported here, not at the top: `aggregators` imports this package as it loads.
  from fedjax_compress.aggregators.encoded import (  # pylint: disable=import-outside-toplevel
    LeafCodec,
    send_clients,
  )
  from fedjax_compress.aggregators.registry import parse_stages  # pylint: disable=import-outside-toplevel

  dim = check.integer("check_stage", "dim", dim, 1)
  clients = check.integer("check_stage", "clients", clients, 2)
  draws = check.integer("check_stage", "draws", draws, 2)
  seed = check.integer("check_stage", "seed", seed, 0)
  stage = parse_stages(stage_or_spec) if isinstance(stage_or_spec, str) else stage_or_spec
  if not isinstance(stage, Stage):
    raise ValueError(f"check_stage: {stage_or_spec!r} is neither a Stage nor a spec string.")
  whole = chain(stage)  # its parts get the keys `encoded_sum` gives them
  spec = Spec((dim,), jnp.float32)
  codec = LeafCodec(whole, spec, 0)
  state = whole.init(spec)
  x = jnp.asarray(np.random.default_rng(seed).normal(size=(clients, dim)), jnp.float32)
  index = jnp.arange(clients, dtype=jnp.int32)
  key = jax.random.key(seed)

  @jax.jit
  def draw(key):
    sent = send_clients(codec, state, x, key, 0, index)
    return sent.decoded, sent.bits

  drawn = [draw(jax.random.fold_in(key, d)) for d in range(draws)]
  decoded = np.stack([d for d, _ in drawn])  # [draws, clients, ...]
  bits = np.stack([b for _, b in drawn])  # [draws, clients]
  out_shape, out_dtype = tuple(decoded.shape[2:]), str(decoded.dtype)
  shape_ok = out_shape == (dim,) and out_dtype == "float32"
  vnmse = bias = floor = math.nan
  if shape_ok:
    x64 = np.asarray(x, np.float64)
    error = decoded.astype(np.float64) - x64
    norms = np.sum(x64**2, axis=-1)
    vnmse = float(np.mean(np.sum(error**2, axis=-1) / norms))
    bias = float(np.sqrt(np.sum(error.mean(axis=0) ** 2) / np.sum(norms)))
    floor = math.sqrt(vnmse / draws)
  holds, commute_error, note = _commutes(whole, state, spec, x, key)
  return StageReport(
    stage=display_name(stage),
    dim=dim,
    clients=clients,
    draws=draws,
    input_shape=(dim,),
    input_dtype="float32",
    decoded_shape=out_shape,
    decoded_dtype=out_dtype,
    shape_ok=shape_ok,
    vnmse=vnmse,
    bias=bias,
    bias_floor=floor,
    bits_per_value=float(np.mean(bits)) / dim,
    commutes_with_sum=whole.commutes_with_sum,
    commutes_holds=holds,
    commute_error=commute_error,
    commute_note=note,
  )


def _commutes(whole: Stage, state, spec: Spec, x: jax.Array, key) -> tuple[bool, float, str]:
  """Whether decode(sum of encodings) == sum of decodes, every part on the common key."""
  from fedjax_compress.aggregators.encoded import client_keys  # pylint: disable=import-outside-toplevel

  private, shared = client_keys(
    jax.random.fold_in(key, 2**31 - 1), 0, jnp.arange(x.shape[0], dtype=jnp.int32)
  )
  common = shared.common
  enc = jax.jit(jax.vmap(whole.encode, (None, 0, 0, None)))(state, x, private, common)
  sides = jax.tree.leaves(enc.side)
  if not all(
    np.array_equal(np.asarray(s), np.broadcast_to(np.asarray(s)[:1], s.shape)) for s in sides
  ):
    return False, math.nan, "its side information differs between clients"
  decode = jax.jit(lambda e: whole.decode(state, e, spec, common))
  each = jax.vmap(decode)(enc)
  summed = Encoded(
    jax.tree.map(lambda v: jnp.sum(v, axis=0, dtype=v.dtype), enc.values),
    jax.tree.map(lambda s: s[0], enc.side),
  )
  of_sum = np.asarray(decode(summed), np.float64)
  sum_of = np.sum(np.asarray(each, np.float64), axis=0)
  if of_sum.shape != sum_of.shape:
    return False, math.nan, "decoding the sum gives another shape"
  error = float(np.linalg.norm(of_sum - sum_of) / max(float(np.linalg.norm(sum_of)), 1e-30))
  holds = bool(error <= COMMUTE_TOLERANCE)
  return holds, error, "" if holds else "decoding the sum is not the sum of the decodes"


def format_report(report: StageReport) -> str:
  """The report as a small two-column table."""
  shape = lambda s, d: f"{d}[{','.join(map(str, s))}]"
  declared = "yes" if report.commutes_with_sum else "no"
  holds = "yes" if report.commutes_holds else f"no ({report.commute_note})"
  if not math.isnan(report.commute_error):
    holds += f", relative error {report.commute_error:.2g}"
  rows = [
    ("stage", report.stage),
    (
      "input",
      f"{shape(report.input_shape, report.input_dtype)} N(0, 1), "
      f"{report.clients} clients x {report.draws} draws",
    ),
    (
      "decoded",
      f"{shape(report.decoded_shape, report.decoded_dtype)} "
      f"({'matches the input' if report.shape_ok else 'DIFFERS from the input'})",
    ),
    ("bits per value", f"{report.bits_per_value:.4f}"),
    ("vNMSE", f"{report.vnmse:.4g}"),
    ("bias (relative)", f"{report.bias:.3g} (noise floor {report.bias_floor:.3g})"),
    ("commutes_with_sum", f"declared {declared}; holds: {holds}"),
  ]
  width = max(len(name) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, no usage block
    raise ValueError(message)


def main(argv: Sequence[str] | None = None) -> int:
  """The command line: prints the report, or one line `error: ...` and returns 2."""
  parser = _Parser(
    prog="python -m fedjax_compress.compression.check_stage",
    description="Measure a stage or chain on Gaussian inputs.",
  )
  parser.add_argument("stages", help='a stages spec, e.g. "hadamard,uniform_quantize(bits=2)"')
  parser.add_argument("--dim", type=int, default=4096, help="values per input vector")
  parser.add_argument("--clients", type=int, default=4, help="clients (>= 2)")
  parser.add_argument("--draws", type=int, default=16, help="encodings of each input (>= 2)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the data and the keys")
  parser.add_argument(
    "--imports", default="", help="comma-separated modules to import first (they register stages)"
  )
  try:
    args = parser.parse_args(argv)
    for module in filter(None, (m.strip() for m in args.imports.split(","))):
      importlib.import_module(module)
    report = check_stage(
      args.stages, dim=args.dim, clients=args.clients, draws=args.draws, seed=args.seed
    )
  except (ValueError, TypeError, ImportError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(format_report(report))
  return 0
