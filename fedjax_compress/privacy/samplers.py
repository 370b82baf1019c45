"""Integer noise for differential privacy under secure aggregation.

Secure aggregation sums integers, so each client adds integer noise to its integer
update before wrapping it into Z_{2^b} (`modular.py`); the server only ever sees the sum
of the noise shares.

- `discrete_gaussian`: N_Z(0, sigma^2), P(x) proportional to exp(-x^2 / (2 sigma^2)) on
  the integers, for the distributed discrete Gaussian mechanism (Kairouz, Liu, Steinke,
  "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
  Aggregation", ICML 2021). Sampled by the rejection sampler of Canonne, Kamath,
  Steinke, "The Discrete Gaussian for Differential Privacy" (NeurIPS 2020).
- `skellam`: Poisson(mu) - Poisson(mu), variance 2 mu, for the Skellam mechanism
  (Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private Federated
  Learning", NeurIPS 2021). Sums of independent Skellam shares are Skellam again.

Both return int32 (also with `jax_enable_x64`), work under `jit` and `vmap` (over keys
and over the scale), and give the same values for the same key wherever they run.

Exactness. The algorithms are exact; the arithmetic is float32, so each probability is
evaluated to about float32 precision (relative errors near 1e-7, see each function),
not exactly. That is the usual gap between an exact algorithm and a floating-point
implementation; it is stated here rather than hidden. The scales are capped
(`MAX_SIGMA`, `MAX_MU`) where float32 would stop holding the integers involved exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression import prng

# The largest sigma: proposals reach about 23 t (t = floor(sigma) + 1), which float32
# must hold exactly (< 2^24).
MAX_SIGMA = 2.0**19
# The Poisson draws of `skellam` are split into pieces of at most this mean:
# `jax.random.poisson` computes in float32, and measured against the exact pmf (4M
# draws, chi-square over 41 bins of +-4 standard deviations) it passed at means 5 to
# 1e4 (p-values 0.67 to 0.88) and failed from 3e4 (p = 2e-6; 1e5: p = 1e-238), where its
# float32 log-factorials lose the precision its acceptance test needs.
SKELLAM_PIECE_MU = 4096.0
# The largest mu: 4096 pieces of at most `SKELLAM_PIECE_MU`, values far inside int32.
MAX_MU = 2.0**24
_TWO_TO_MINUS_32 = np.float32(2.0**-32)


def _shape(owner: str, shape) -> tuple[int, ...]:
  """`shape` as a tuple of ints >= 0 (an int is a one-dimensional shape)."""
  if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
    shape = (shape,)
  if not isinstance(shape, Sequence) or not all(
    isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape
  ):
    raise check.invalid(owner, "shape", shape, "a tuple of ints >= 0")
  return tuple(int(n) for n in shape)


def _scale(owner: str, name: str, value, hi: float) -> jax.Array:
  """A scale as a float32 scalar; checked in [0, hi] when it is a Python number.

  A traced scale cannot be checked: outside [0, hi] (or NaN) it is treated as 0, so
  that the sampler's loop still ends. Check such a value before tracing.
  """
  if not isinstance(value, jax.core.Tracer):
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) and np.ndim(value) == 0:
      value = value.item()
    check.real(owner, name, value, 0.0, hi)
  value = jnp.asarray(value, jnp.float32)
  if value.shape != ():
    raise check.invalid(owner, name, value, "a scalar (vmap for one value per client)")
  return jnp.where((value >= 0) & (value <= hi), value, 0.0)


def _exponential(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Exp(1) draws, -log(W) for W = (bits + 1) 2^-32 in (0, 1] (float32).

  32 random bits per draw: P(E > c) = P(W <= e^-c) is exact to within 2^-32 in the
  tail (W near 0 is on the exact grid 2^-32) and to float32 rounding (about 2^-24) near
  c = 0. Draws stop at 32 log 2 = 22.18: P(E > c) is taken as 0 beyond, where it is
  below 2.4e-10.
  """
  w = (prng.bits(key, shape).astype(jnp.float32) + 1.0) * _TWO_TO_MINUS_32
  return -jnp.log(w)


def discrete_gaussian(key: jax.Array, sigma, shape: Sequence[int] | int = ()) -> jax.Array:
  """int32 draws from the discrete Gaussian N_Z(0, sigma^2) (Canonne, Kamath, Steinke 2020).

  P(X = x) is proportional to exp(-x^2 / (2 sigma^2)) over the integers x. Its variance
  is below sigma^2 (Canonne et al.), noticeably so only for sigma under about 1
  (`discrete_gaussian_pmf` gives it exactly), and sums of independent discrete
  Gaussians are close to, not exactly, discrete Gaussians (Kairouz et al. 2021 account
  for that in their privacy analysis).

  The rejection sampler of Canonne et al. (their Algorithm 3): with t = floor(sigma) + 1,
  propose Y from the discrete Laplace distribution P(Y = y) ~ exp(-|y| / t), and accept
  it with probability exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)); the accepted Y is
  exactly N_Z(0, sigma^2). The proposal is their Algorithm 2: X = U + t V with U uniform
  on {0, ..., t-1} (kept with probability exp(-U / t)), V geometric with
  P(V = v) = (1 - e^-1) e^-v, and a random sign, a negative zero being rejected (so zero
  is not counted twice). Decisions:

  - The three rejections (of U, of negative zero, of the Gaussian test) are one: a
    proposal is kept with probability exp(-U/t) exp(-(X - sigma^2/t)^2 / (2 sigma^2))
    unless it is a negative zero. The kept distribution is the same (the product of the
    acceptance probabilities), with one random test instead of two.
  - Vectorized as a `lax.while_loop` that redraws every entry each round and keeps the
    first accepted proposal of each: rounds redraw the whole array (static shapes), and
    end when every entry has one. One round accepts an entry with probability 0.31 to
    0.36 for sigma <= 1 and about 0.48 from sigma = 3 on (computed from the proposal),
    so an array of n entries takes about log(n) / 0.65 rounds for large sigma and
    log(n) / 0.4 for small, e.g. 21 to 37 rounds for a million entries. Under `vmap`
    the loop runs until every batch member is done; done members keep their values,
    so `vmap` gives what separate calls give.
  - Bernoulli(exp(-c)) is E > c for an exponential E from 32 random bits (see
    `_exponential`), rather than a float32 uniform below exp(-c): the tails keep their
    probabilities down to 2^-32 instead of 2^-23. Proposals whose acceptance probability
    is below 2.4e-10 are never accepted: that removes at most 2.4e-10 / 0.31, below
    1e-9, of the target's mass, all far in its tails (beyond about 7.7 sigma + 1 for
    large sigma).
  - V from the same exponential: V = floor(E), exactly geometric up to E's precision.
    U from `jax.random.randint`. The arithmetic is float32: the acceptance exponent is
    evaluated with a relative error near 1e-7, so accepted probabilities are off by
    about that relative amount. This is "exact up to floating-point evaluation", not
    exact in the strict sense of Canonne et al.'s rational arithmetic.

  Args:
    key: a JAX PRNG key; the same key gives the same values.
    sigma: the scale, >= 0: a Python number (checked: at most `MAX_SIGMA`) or a traced
      float32 scalar (not checkable: outside [0, MAX_SIGMA] it gives zeros). 0 gives
      zeros.
    shape: the shape of the draws.

  Returns:
    int32 values of `shape`.
  """
  owner = "discrete_gaussian"
  shape = _shape(owner, shape)
  sigma = _scale(owner, "sigma", sigma, MAX_SIGMA)
  return _discrete_gaussian(key, sigma, shape)


@functools.partial(jax.jit, static_argnums=2)
def _discrete_gaussian(key, sigma, shape):
  # Jitted, so that eager calls compile once per shape rather than once per call.
  live = sigma > 0
  s = jnp.where(live, sigma, 1.0)
  t = jnp.floor(s) + 1.0
  t_int = t.astype(jnp.int32)
  variance = s * s
  center = variance / t

  def round_(carry):
    i, values, done = carry
    k_u, k_v, k_sign, k_test = jax.random.split(jax.random.fold_in(key, i), 4)
    u = jax.random.randint(k_u, shape, 0, t_int, jnp.int32)
    v = jnp.floor(_exponential(k_v, shape)).astype(jnp.int32)
    x = u + t_int * v
    negative = (prng.bits(k_sign, shape) >> 31) == 1
    cost = u.astype(jnp.float32) / t + jnp.square(x.astype(jnp.float32) - center) / (2.0 * variance)
    accept = (_exponential(k_test, shape) > cost) & ~(negative & (x == 0))
    values = jnp.where(accept & ~done, jnp.where(negative, -x, x), values)
    return i + 1, values, done | accept

  init = (jnp.zeros((), jnp.int32), jnp.zeros(shape, jnp.int32), jnp.broadcast_to(~live, shape))
  _, values, _ = jax.lax.while_loop(lambda c: ~jnp.all(c[2]), round_, init)
  return values


def skellam(key: jax.Array, mu, shape: Sequence[int] | int = ()) -> jax.Array:
  """int32 draws from the symmetric Skellam distribution, Poisson(mu) - Poisson(mu).

  Mean 0, variance 2 mu, excess kurtosis 1 / (2 mu); the sum of independent Skellam
  draws of means mu_i is Skellam of mean sum(mu_i), which is why each client of the
  Skellam mechanism adds its share (Agarwal, Kairouz, Liu 2021).

  Decision: each Poisson(mu) is drawn as the sum of m = ceil(mu / SKELLAM_PIECE_MU)
  independent Poisson(mu / m) draws of `jax.random.poisson` (the sum of independent
  Poissons is Poisson, so this changes nothing in distribution): that sampler computes
  in float32 and is accurate for means up to about 1e4 but not beyond (measured; see
  `SKELLAM_PIECE_MU`). The cost grows with mu: m pairs of Poisson draws, in a loop.
  mu itself is rounded to float32 (relative 6e-8).

  Args:
    key: a JAX PRNG key; the same key gives the same values.
    mu: the mean of each Poisson, >= 0: a Python number (checked: at most `MAX_MU`) or a
      traced float32 scalar (not checkable: outside [0, MAX_MU] it gives zeros). 0 gives
      zeros.
    shape: the shape of the draws.

  Returns:
    int32 values of `shape`.
  """
  owner = "skellam"
  shape = _shape(owner, shape)
  mu = _scale(owner, "mu", mu, MAX_MU)
  return _skellam(key, mu, shape)


@functools.partial(jax.jit, static_argnums=2)
def _skellam(key, mu, shape):
  pieces = jnp.maximum(jnp.ceil(mu / SKELLAM_PIECE_MU), 1.0)
  piece_mu = mu / pieces

  def piece(j, total):
    k_plus, k_minus = jax.random.split(jax.random.fold_in(key, j))
    return (
      total
      + jax.random.poisson(k_plus, piece_mu, shape, jnp.int32)
      - jax.random.poisson(k_minus, piece_mu, shape, jnp.int32)
    )

  return jax.lax.fori_loop(0, pieces.astype(jnp.int32), piece, jnp.zeros(shape, jnp.int32))


def discrete_gaussian_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
  """The exact pmf of N_Z(0, sigma^2) at the integers `support` (NumPy, float64).

  Normalized over the integers within 60 sigma + 60 of 0 (the mass beyond is below
  1e-700); for tests and for calibration checks, not for sampling.
  """
  sigma = check.real("discrete_gaussian_pmf", "sigma", sigma, 0.0, lo_open=True)
  reach = int(math.ceil(60 * sigma)) + 60
  grid = np.arange(-reach, reach + 1, dtype=np.float64)
  normalizer = np.sum(np.exp(-(grid**2) / (2 * sigma**2)))
  support = np.asarray(support, np.float64)
  return np.exp(-(support**2) / (2 * sigma**2)) / normalizer
