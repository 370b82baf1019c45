"""TFF's aggregator presets, as compositions of the pieces in this package."""

from __future__ import annotations

import functools

import jax

from fedjax_compress.aggregators import robust
from fedjax_compress.aggregators.base import Aggregator, check_accounting, wrap
from fedjax_compress.aggregators.encoded import (
  check_threshold,
  encoded_mean,
  encoded_sum,
  float32_mean,
)
from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.base import identity
from fedjax_compress.compression.bitpack import check_bits
from fedjax_compress.compression.uniform_quantize import uniform_quantize


def robust_aggregator(
  *,
  zeroing: bool = True,
  clipping: bool = True,
  weighted: bool = True,
  inner: Aggregator | None = None,
  accounting: str = "exact",
) -> Aggregator:
  """zeroing(clipping(inner)) with TFF's adaptive defaults; `inner` defaults to `float32_mean`."""
  zeroing = check.boolean("robust_aggregator", "zeroing", zeroing)
  clipping = check.boolean("robust_aggregator", "clipping", clipping)
  agg = inner or float32_mean(weighted=weighted)
  if clipping:
    agg = robust.clipping(agg, accounting=accounting)
  if zeroing:
    agg = robust.zeroing(agg, accounting=accounting)
  return agg


def compression_aggregator(
  *,
  zeroing: bool = True,
  clipping: bool = True,
  weighted: bool = True,
  bits: int = 8,
  threshold: int = 20_000,
  accounting: str = "exact",
) -> Aggregator:
  """TFF's `compression_aggregator`: robust wrappers around a mean of quantized tensors.

  Tensors with more than `threshold` elements are stochastically quantized to `bits` over
  their own [min, max] and bit-packed: 32 payload bits per word (`exact`), or TFF's 28
  (`tff`); smaller tensors travel as float32.
  """
  bits = check_bits("compression_aggregator", bits)
  threshold = check_threshold("compression_aggregator", threshold)
  word_bits = 28 if check_accounting(accounting) == "tff" else 32
  stage = uniform_quantize(bits, stochastic=True, word_bits=word_bits)
  return robust_aggregator(
    zeroing=zeroing,
    clipping=clipping,
    accounting=accounting,
    inner=encoded_mean(stage, threshold=threshold, weighted=weighted),
  )


def dp_aggregator(
  noise_multiplier: float | None,
  clients_per_round: int,
  *,
  clip_norm: float = 0.1,
  zeroing: bool = True,
  accounting: str = "exact",
  target_epsilon: float | None = None,
  delta: float | None = None,
  num_clients: int | None = None,
  rounds: int | None = None,
) -> Aggregator:
  """DP-FedAvg's aggregator (McMahan et al., 2018) with a fixed clip: the central baseline.

  Each update is clipped to L2 norm `clip_norm`, the server adds Gaussian noise of
  standard deviation `noise_multiplier * clip_norm` to the sum and divides by the
  expected cohort `clients_per_round` (unweighted, as DP requires). Unlike TFF's
  `dp_aggregator`, the clip is fixed, not adaptive.

  Accounting: `aggregator.privacy(template)` is the run's `privacy.DpPlan` (mechanism
  "gaussian"), accounted by dp-accounting like the distributed mechanisms when
  `num_clients` and `rounds` are known; `target_epsilon` (instead of
  `noise_multiplier`) calibrates the noise for them. Zeroing (on by default, as in TFF)
  only replaces non-finite or huge updates by zeros after clipping would have bounded
  them anyway, so it does not change the sensitivity; its threshold is fixed (TFF's
  initial 10, times 2, plus 1), since an adaptive one would be a release of the clients'
  norms that the accounting does not cover.
  """
  from fedjax_compress.privacy import plan as plan_lib  # pylint: disable=import-outside-toplevel

  clip_norm = check.real("dp_aggregator", "clip_norm", clip_norm, 0.0, lo_open=True)
  clients_per_round = check.integer("dp_aggregator", "clients_per_round", clients_per_round, 1)
  zeroing = check.boolean("dp_aggregator", "zeroing", zeroing)
  make_plan = functools.partial(
    plan_lib.make_plan,
    "gaussian",
    clip_norm=clip_norm,
    clients_per_round=clients_per_round,
    noise_multiplier=noise_multiplier,
    target_epsilon=target_epsilon,
    delta=plan_lib.DEFAULT_DELTA if delta is None else delta,
    num_clients=num_clients,
    rounds=rounds,
  )
  make_plan(size=None)  # checks the arguments
  # Resolved (a target calibrated) when first needed, once.
  plan = functools.cache(lambda: make_plan(size=0))
  agg = robust.clipping(
    encoded_sum(identity()), clip_norm=clip_norm, adaptive=False, accounting=accounting
  )
  agg = robust.gaussian_noise(agg, stddev=lambda: plan().noise_multiplier * clip_norm)
  agg = _divide(agg, float(clients_per_round))
  agg = wrap(agg, privacy=lambda template: plan())
  return robust.zeroing(agg, adaptive=False, accounting=accounting) if zeroing else agg


def _divide(inner: Aggregator, denominator: float) -> Aggregator:
  def finish(state, partial, spec, key):
    total, state, measurements = inner.finish(state, partial, spec, key)
    return jax.tree.map(lambda t: t / denominator, total), state, measurements

  return wrap(inner, finish=finish)
