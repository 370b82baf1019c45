"""Lloyd-Max quantization: the levels that minimize the squared error of a distribution.

`gaussian_levels(bits)` are those of the standard normal, computed once on the host by
Lloyd's iteration on the exact pdf/cdf (EDEN's codebook). `lloyd_max(bits)` fits levels
to each tensor's own values (1-D k-means) and sends them as float32 side information.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.base import FLOAT, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.bitpack import bitpack, check_bits, code_dtype
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.flat import flat, unflat

MAX_GAUSSIAN_BITS = 8  # `gaussian_levels` are tabulated for 1..8 bits


def _pdf(t: np.ndarray) -> np.ndarray:
  return np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)


_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _cdf(t: np.ndarray) -> np.ndarray:
  return np.asarray(_ERFC(-np.asarray(t) / math.sqrt(2)), np.float64) / 2


def _normal_quantile(p: np.ndarray) -> np.ndarray:
  lo, hi = np.full_like(p, -10.0), np.full_like(p, 10.0)
  for _ in range(60):  # bisection to float64 resolution
    mid = (lo + hi) / 2
    below = _cdf(mid) < p
    lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
  return (lo + hi) / 2


def _cells(levels: np.ndarray):
  """Probability and first moment of N(0, 1) over each level's nearest-neighbour cell."""
  edges = np.concatenate([[-np.inf], (levels[1:] + levels[:-1]) / 2, [np.inf]])
  cdf, pdf = _cdf(edges), _pdf(edges)
  return cdf[1:] - cdf[:-1], pdf[:-1] - pdf[1:]  # E[Z 1{cell}] = pdf(lo) - pdf(hi)


@functools.lru_cache(maxsize=None)
def _gaussian_levels(bits: int) -> tuple[float, ...]:
  # Start from the high-rate optimum (level density ~ pdf^(1/3), i.e. N(0, 3) quantiles):
  # Lloyd's iteration then needs far fewer steps than from a uniform grid.
  levels = math.sqrt(3) * _normal_quantile((np.arange(2**bits) + 0.5) / 2**bits)
  for _ in range(50_000):
    probs, moments = _cells(levels)
    new = moments / probs  # each level moves to its cell's centroid
    done = np.max(np.abs(new - levels)) < 1e-11
    levels = new
    if done:
      break
  return tuple(float(v) for v in levels)


def gaussian_levels(bits: int) -> np.ndarray:
  """The 2^bits Lloyd-Max levels of N(0, 1), ascending (float64); bits in 1..8."""
  return np.array(_gaussian_levels(check_bits("gaussian_levels", bits, MAX_GAUSSIAN_BITS)))


def gaussian_distortion(bits: int) -> float:
  """E (Z - q(Z))^2 for Z ~ N(0, 1) and its Lloyd-Max quantizer q."""
  levels = gaussian_levels(bits)
  probs, moments = _cells(levels)
  return float(1.0 - 2 * np.sum(levels * moments) + np.sum(probs * levels**2))


# Up to this many midpoints, comparing each value with all of them beat a binary search
# on XLA:CPU, and at 63 it lost (`python -m benchmarks.fold_cost`; benchmarks/RESULTS.md,
# "Fold cost"). The same indices either way.
_COMPARE_ALL_MIDPOINTS = 31


def nearest_level(x: jax.Array, levels: jax.Array) -> jax.Array:
  """Index of the nearest of ascending `levels` for each value (int32)."""
  midpoints = (levels[1:] + levels[:-1]) / 2
  method = "compare_all" if midpoints.shape[0] <= _COMPARE_ALL_MIDPOINTS else "scan"
  return jnp.searchsorted(midpoints, x, method=method).astype(jnp.int32)


def _check(owner: str, bits, iterations) -> tuple[int, int]:
  return (
    check_bits(owner, bits, MAX_GAUSSIAN_BITS),
    check.integer(owner, "iterations", iterations, 0),
  )


@named
def lloyd_max_codes(bits: int, *, iterations: int = 10) -> Stage:
  """Fits 2^bits levels to x by Lloyd's iteration; sends codes and the levels (float32).

  Starts from the Gaussian levels scaled to x's mean and deviation. Deterministic
  (biased), nearest-level rounding. Follow with `bitpack(bits)`. `bits` in 1..8;
  `iterations` >= 0 (0 keeps the scaled Gaussian levels).
  """
  bits, iterations = _check("lloyd_max_codes", bits, iterations)
  init = jnp.asarray(gaussian_levels(bits), jnp.float32)
  num = 2**bits

  def encode(x, key, shared_key):
    x = flat(x)
    levels = jnp.mean(x) + jnp.std(x) * init

    def step(levels, _):
      cell = nearest_level(x, levels)
      sums = jax.ops.segment_sum(x, cell, num)
      counts = jax.ops.segment_sum(jnp.ones_like(x), cell, num)
      # An empty cell keeps its level; sorting keeps the midpoints valid.
      return jnp.sort(jnp.where(counts > 0, sums / jnp.maximum(counts, 1), levels)), None

    levels, _ = jax.lax.scan(step, levels, None, length=iterations)
    return Encoded(nearest_level(x, levels).astype(code_dtype(bits)), levels)

  def decode(enc, spec, shared_key):
    return unflat(enc.side[enc.values.astype(jnp.int32)], spec)

  return stateless(encode, decode, takes=FLOAT, emits=codes_kind(bits))


@named
def lloyd_max(bits: int, *, iterations: int = 10) -> Stage:
  """Data-fitted Lloyd-Max quantizer: bits per value plus 2^bits float32 levels."""
  bits, iterations = _check("lloyd_max", bits, iterations)
  return chain(lloyd_max_codes(bits, iterations=iterations), bitpack(bits))
