"""Bits per coordinate for the modular sum of secure aggregation, and gamma for a bit budget.

Each of n clients clips its update to L2 norm c, rotates it (the same random rotation
for all), scales it by gamma, rounds it to integers and adds its noise share; secure
aggregation sums the results modulo 2^bits, and the server reads the sum back as
integers in [-2^(bits-1), 2^(bits-1) - 1]. The sum is right unless some coordinate's
magnitude exceeds 2^(bits-1) - 1 and wraps around. Here, a coordinate j of the sum is

    S_j = gamma (R sum_i x_i)_j + sum_i e_ij + N_j,

and we bound P(max_j |S_j| > M) <= failure_probability (Kairouz, Liu, Steinke, ICML
2021, Sections 4.2 and 4.4, do the same with a fixed k standard deviations of S_j; we
follow their variance decomposition but choose k from the failure probability):

- signal: ||sum_i x_i|| <= n c (the worst case: all updates aligned; no sqrt(n) growth is
  assumed). A coordinate of a rotated vector of norm L is sub-Gaussian with variance
  proxy rho L^2 / d: rho = 1 for the randomized Hadamard transform H D / sqrt(d)
  (Hoeffding over the random signs D), Kairouz et al.'s rho-flatness;
- rounding: randomized rounding moves a coordinate by a mean-zero amount in an interval
  of length 1: sub-Gaussian with proxy 1/4 (Hoeffding), n of them sum to proxy n / 4;
- noise: the summed noise, standard deviation gamma * noise_stddev, is taken as
  sub-Gaussian with that proxy. Exact for (sums of) discrete Gaussians (Canonne, Kamath,
  Steinke 2020 show N_Z(0, s^2) is s^2-sub-Gaussian); for Skellam, whose tails are
  Poisson's, it is an approximation that is close when the variance is large (as it is
  in integer units after scaling by gamma).

The three are independent given the inputs, so S_j is sub-Gaussian with proxy
V = gamma^2 (rho (n c)^2 / d + noise_stddev^2) + n / 4, P(|S_j| > t) <= 2 exp(-t^2 / (2V)),
and a union bound over the d coordinates gives M = sqrt(2 V log(2 d / failure_probability)).
The sum is an integer, so |S_j| <= floor(M), and bits = ceil(log2(2 floor(M) + 1)).
What is not covered: conditional rounding (redrawn until a norm bound holds) makes the
rounding errors slightly dependent; like Kairouz et al. we ignore that.
"""

from __future__ import annotations

import math

from fedjax_compress.compression import arguments as check


def _check(owner, clients, clip_norm, dim, noise_stddev, failure_probability, rho):
  clients = check.integer(owner, "clients", clients, 1)
  clip_norm = check.real(owner, "clip_norm", clip_norm, 0.0)
  dim = check.integer(owner, "dim", dim, 1)
  noise_stddev = check.real(owner, "noise_stddev", noise_stddev, 0.0)
  failure_probability = check.real(
    owner, "failure_probability", failure_probability, 0.0, 1.0, lo_open=True, hi_open=True
  )
  rho = check.real(owner, "rho", rho, 0.0, lo_open=True)
  return clients, clip_norm, dim, noise_stddev, failure_probability, rho


def _per_gamma_squared(clients, clip_norm, dim, noise_stddev, rho) -> float:
  """The part of the variance proxy that scales with gamma^2."""
  return rho * (clients * clip_norm) ** 2 / dim + noise_stddev**2


def max_abs_coordinate(
  *,
  clients: int,
  clip_norm: float,
  gamma: float,
  dim: int,
  noise_stddev: float,
  failure_probability: float,
  rho: float = 1.0,
) -> float:
  """M: every coordinate of the integer sum is within [-M, M] with prob. >= 1 - failure.

  M = sqrt(2 V log(2 dim / failure_probability)), V = gamma^2 (rho (clients clip_norm)^2
  / dim + noise_stddev^2) + clients / 4 (module docstring).

  Args:
    clients: n, the clients whose updates are summed.
    clip_norm: c, the L2 norm bound of an update, in the update's units.
    gamma: the scale applied before rounding to integers.
    dim: d, the number of coordinates (after padding for the rotation).
    noise_stddev: the standard deviation, per coordinate, of the summed noise, in the
      update's units (z * c for noise multiplier z; it is gamma times that in integers).
    failure_probability: the probability allowed for any coordinate to exceed M.
    rho: the rotation's flatness (1 for the randomized Hadamard transform).
  """
  owner = "max_abs_coordinate"
  n, c, d, s, p, rho = _check(
    owner, clients, clip_norm, dim, noise_stddev, failure_probability, rho
  )
  gamma = check.real(owner, "gamma", gamma, 0.0, lo_open=True)
  variance = gamma**2 * _per_gamma_squared(n, c, d, s, rho) + n / 4
  return math.sqrt(2 * variance * math.log(2 * d / p))


def bits_for_modular_sum(
  *,
  clients: int,
  clip_norm: float,
  gamma: float,
  dim: int,
  noise_stddev: float,
  failure_probability: float,
  rho: float = 1.0,
) -> int:
  """Bits per coordinate for the modular sum to wrap with probability <= failure_probability.

  ceil(log2(2 floor(M) + 1)) with M from `max_abs_coordinate` (same arguments): the
  integers -floor(M)..floor(M) fit in Z_{2^bits} read back as signed.
  """
  m = math.floor(
    max_abs_coordinate(
      clients=clients,
      clip_norm=clip_norm,
      gamma=gamma,
      dim=dim,
      noise_stddev=noise_stddev,
      failure_probability=failure_probability,
      rho=rho,
    )
  )
  return max(1, math.ceil(math.log2(2 * m + 1)))


def gamma_for_bits(
  bits: int,
  *,
  clients: int,
  clip_norm: float,
  dim: int,
  noise_stddev: float,
  failure_probability: float,
  rho: float = 1.0,
) -> float:
  """The largest scale gamma whose sum fits in `bits` bits (the inverse of `bits_for_modular_sum`).

  The sum fits while M < 2^(bits-1) (then |S_j| <= floor(M) <= 2^(bits-1) - 1): gamma
  solves M = 2^(bits-1), gamma = sqrt((4^(bits-1) / (2 log(2 d / p)) - n / 4) / A) with
  A = rho (n c)^2 / d + noise_stddev^2, times (1 - 1e-12) to stay below the root.
  `bits_for_modular_sum(gamma=gamma_for_bits(bits))` is `bits`, and any larger gamma
  needs more.
  Kairouz et al. (Section 4.4) choose gamma from the bit width the same way, with k
  standard deviations in place of sqrt(2 log(2 d / p)).

  Raises:
    ValueError: naming `bits` when even gamma -> 0 does not fit (the n rounding errors
      alone need more bits), and for bad arguments.
  """
  owner = "gamma_for_bits"
  bits = check.integer(owner, "bits", bits, 2, 62)
  n, c, d, s, p, rho = _check(
    owner, clients, clip_norm, dim, noise_stddev, failure_probability, rho
  )
  per = _per_gamma_squared(n, c, d, s, rho)
  if per == 0:
    raise check.invalid(
      owner, "clip_norm", clip_norm, "> 0 (or noise_stddev > 0): otherwise any gamma fits"
    )
  limit = 2.0 ** (bits - 1)
  room = limit**2 / (2 * math.log(2 * d / p)) - n / 4
  if room <= 0:
    raise check.invalid(
      owner, "bits", bits, f"large enough for the rounding errors of {n} clients alone"
    )
  return math.sqrt(room / per) * (1 - 1e-12)  # below the root: float error stays inside
