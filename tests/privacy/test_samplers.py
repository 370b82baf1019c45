"""Integer noise samplers (privacy/samplers.py) against their exact distributions.

Every tolerance is derived from the distribution: 5 standard errors of the estimate,
computed from the exact moments (pmf sums over a wide integer range), so that a correct
sampler fails with probability below 1e-6 per check; the seeds are fixed.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fedjax_compress.privacy import samplers
from fedjax_compress.privacy.samplers import discrete_gaussian, discrete_gaussian_pmf, skellam

N = 400_000
Z = 5.0  # standard errors allowed


def _dg_pmf(sigma):
  reach = int(math.ceil(40 * sigma)) + 40
  support = np.arange(-reach, reach + 1)
  return support, discrete_gaussian_pmf(sigma, support)


def _skellam_pmf(mu):
  reach = int(math.ceil(40 * math.sqrt(2 * mu))) + 40
  support = np.arange(-reach, reach + 1)
  return support, stats.skellam.pmf(support, mu, mu)


def _moments(support, pmf, orders=(1, 2, 4, 8)):
  k = support.astype(np.float64)
  return {r: float(np.sum(k**r * pmf)) for r in orders}


def _check_moments(x, support, pmf):
  """Mean, second and fourth moments of the sample within Z standard errors."""
  m = _moments(support, pmf)
  n = x.size
  x = x.astype(np.float64)
  assert abs(x.mean() - m[1]) <= Z * math.sqrt(m[2] / n)
  assert abs(np.mean(x**2) - m[2]) <= Z * math.sqrt((m[4] - m[2] ** 2) / n)
  assert abs(np.mean(x**4) - m[4]) <= Z * math.sqrt((m[8] - m[4] ** 2) / n)


def _bins(support, pmf, scale):
  """Edges of about 60 bins over +-4 scale (each integer its own bin when scale is small),
  with a tail bin on each side: the bins are (edges[i], edges[i + 1]]."""
  width = max(1, int(round(8 * scale / 60)))
  reach = int(math.ceil(4 * scale / width)) * width
  inner = np.arange(-reach - 1, reach + 1, width)
  return np.concatenate([[support[0] - 1], inner, [support[-1]]])


def _chi_square_and_tv(x, support, pmf, scale):
  edges = _bins(support, pmf, scale)
  cdf = np.concatenate([[0.0], np.cumsum(pmf)])
  # P(edges[i] < X <= edges[i + 1]) from the pmf on the support.
  position = lambda e: np.searchsorted(support, e, side="right")
  expected = np.diff(cdf[position(edges)])
  observed = np.histogram(x, bins=edges + 0.5)[0] / x.size
  keep = expected * x.size >= 20
  # Bins expected to be nearly empty are merged into one.
  exp_c = np.append(expected[keep], expected[~keep].sum())
  obs_c = np.append(observed[keep], observed[~keep].sum())
  if exp_c[-1] * x.size < 20:
    exp_c, obs_c = exp_c[:-1], obs_c[:-1]
  chi2 = x.size * np.sum((obs_c - exp_c) ** 2 / exp_c)
  p_value = stats.chi2.sf(chi2, exp_c.size - 1)
  tv = 0.5 * np.sum(np.abs(observed - expected))
  # E|p_hat - p| <= sqrt(p (1 - p) / n) per bin (Jensen); twice the sum is a loose bound.
  tv_bound = 2 * 0.5 * np.sum(np.sqrt(expected * (1 - expected) / x.size))
  return p_value, tv, tv_bound


@pytest.fixture(scope="module")
def dg_draws():
  draw = jax.jit(lambda key, sigma: discrete_gaussian(key, sigma, (N,)))
  return {
    sigma: np.asarray(draw(jax.random.key(seed), sigma))
    for seed, sigma in enumerate((0.5, 1.0, 3.7, 20.0, 1000.0))
  }


@pytest.mark.parametrize("sigma", [0.5, 3.7, 1000.0])
def test_discrete_gaussian_moments(dg_draws, sigma):
  x = dg_draws[sigma]
  assert x.dtype == np.int32
  support, pmf = _dg_pmf(sigma)
  _check_moments(x, support, pmf)


@pytest.mark.parametrize("sigma", [0.5, 3.7, 1000.0])
def test_discrete_gaussian_tails(dg_draws, sigma):
  x = np.abs(dg_draws[sigma].astype(np.int64))
  support, pmf = _dg_pmf(sigma)
  for k in (1, 2, 3):
    p = pmf[np.abs(support) >= k * sigma].sum()
    assert abs(np.mean(x >= k * sigma) - p) <= Z * math.sqrt(p * (1 - p) / x.size) + 1e-12
  # Far tails: nothing beyond 7 sigma + 2 (exact mass below 1e-11).
  assert x.max() <= 7 * sigma + 2


@pytest.mark.parametrize("sigma", [0.5, 3.7, 1000.0])
def test_discrete_gaussian_pmf_fits(dg_draws, sigma):
  support, pmf = _dg_pmf(sigma)
  p_value, tv, tv_bound = _chi_square_and_tv(dg_draws[sigma], support, pmf, sigma)
  assert p_value > 1e-6, p_value
  assert tv <= tv_bound, (tv, tv_bound)


def test_discrete_gaussian_small_sigma_is_mostly_zero():
  # sigma = 0.1: P(0) = 1 / (1 + 2 e^-50 + ...), so every draw is 0.
  x = discrete_gaussian(jax.random.key(3), 0.1, (10_000,))
  assert not np.any(np.asarray(x))


def test_discrete_gaussian_zero_sigma_gives_zeros():
  x = discrete_gaussian(jax.random.key(0), 0.0, (3, 4))
  assert x.shape == (3, 4) and x.dtype == jnp.int32 and not np.any(np.asarray(x))
  traced = jax.jit(lambda s: discrete_gaussian(jax.random.key(0), s, (5,)))(0.0)
  assert not np.any(np.asarray(traced))


def test_discrete_gaussian_is_deterministic_per_key_and_traceable():
  key = jax.random.key(7)
  eager = np.asarray(discrete_gaussian(key, 2.5, (1000,)))
  np.testing.assert_array_equal(eager, np.asarray(discrete_gaussian(key, 2.5, (1000,))))
  assert np.any(eager != np.asarray(discrete_gaussian(jax.random.key(8), 2.5, (1000,))))
  jitted = jax.jit(lambda k, s: discrete_gaussian(k, s, (1000,)))(key, 2.5)
  np.testing.assert_array_equal(eager, np.asarray(jitted))
  # vmap over keys gives what separate calls give (done members keep their values).
  keys = jax.random.split(key, 4)
  batched = jax.vmap(lambda k: discrete_gaussian(k, 2.5, (50,)))(keys)
  for i in range(4):
    np.testing.assert_array_equal(batched[i], discrete_gaussian(keys[i], 2.5, (50,)))
  # vmap over the scale, one sigma per client, including zero.
  sigmas = jnp.asarray([0.0, 1.0, 30.0])
  per_sigma = jax.vmap(lambda s: discrete_gaussian(key, s, (50,)))(sigmas)
  for i, s in enumerate([0.0, 1.0, 30.0]):
    np.testing.assert_array_equal(per_sigma[i], discrete_gaussian(key, s, (50,)))


def test_discrete_gaussian_shapes():
  key = jax.random.key(1)
  assert discrete_gaussian(key, 1.0).shape == ()
  assert discrete_gaussian(key, 1.0, 7).shape == (7,)
  assert discrete_gaussian(key, 1.0, (0,)).shape == (0,)


@pytest.mark.parametrize(
  "sigma", [-1.0, math.nan, math.inf, 2 * samplers.MAX_SIGMA, True, "1", np.ones(2)]
)
def test_discrete_gaussian_refuses_invalid_sigma(sigma):
  with pytest.raises(ValueError, match="discrete_gaussian: sigma="):
    discrete_gaussian(jax.random.key(0), sigma, (3,))


@pytest.mark.parametrize("shape", [(-1,), (2.0,), "3", (True,)])
def test_samplers_refuse_invalid_shape(shape):
  with pytest.raises(ValueError, match="shape="):
    discrete_gaussian(jax.random.key(0), 1.0, shape)
  with pytest.raises(ValueError, match="shape="):
    skellam(jax.random.key(0), 1.0, shape)


def test_discrete_gaussian_pmf_sums_to_one():
  for sigma in (0.3, 2.0, 50.0):
    support, pmf = _dg_pmf(sigma)
    assert abs(pmf.sum() - 1) < 1e-12
    # Variance at most sigma^2 (Canonne et al.), close to it from sigma = 2 on.
    var = _moments(support, pmf)[2]
    assert var <= sigma**2 * (1 + 1e-12)
    if sigma >= 2:
      assert var == pytest.approx(sigma**2, rel=1e-9)


@pytest.fixture(scope="module")
def skellam_draws():
  draw = jax.jit(lambda key, mu: skellam(key, mu, (N,)))
  # 10000 is drawn in three Poisson pieces per side.
  return {
    mu: np.asarray(draw(jax.random.key(100 + seed), mu))
    for seed, mu in enumerate((0.3, 5.0, 50.0, 10_000.0))
  }


@pytest.mark.parametrize("mu", [0.3, 50.0, 10_000.0])
def test_skellam_moments_and_kurtosis(skellam_draws, mu):
  x = skellam_draws[mu]
  assert x.dtype == np.int32
  support, pmf = _skellam_pmf(mu)
  m = _moments(support, pmf)
  # The exact pmf has the textbook moments: mean 0, variance 2 mu, excess kurtosis 1/(2 mu).
  assert abs(m[1]) < 1e-9 and m[2] == pytest.approx(2 * mu, rel=1e-9)
  assert m[4] / m[2] ** 2 - 3 == pytest.approx(1 / (2 * mu), rel=1e-6)
  _check_moments(x, support, pmf)
  # Excess kurtosis of the sample: the errors of the 2nd and 4th moments, propagated.
  n, xf = x.size, x.astype(np.float64)
  s2, s4 = np.mean(xf**2), np.mean(xf**4)
  se2, se4 = math.sqrt((m[4] - m[2] ** 2) / n), math.sqrt((m[8] - m[4] ** 2) / n)
  tolerance = Z * (se4 / m[2] ** 2 + 2 * m[4] * se2 / m[2] ** 3)
  assert abs(s4 / s2**2 - 3 - 1 / (2 * mu)) <= tolerance


@pytest.mark.parametrize("mu", [0.3, 50.0, 10_000.0])
def test_skellam_pmf_fits(skellam_draws, mu):
  support, pmf = _skellam_pmf(mu)
  p_value, tv, tv_bound = _chi_square_and_tv(skellam_draws[mu], support, pmf, math.sqrt(2 * mu))
  assert p_value > 1e-6, p_value
  assert tv <= tv_bound, (tv, tv_bound)


def test_skellam_large_mu_in_pieces():
  # 1e5 = 25 pieces of 4000: jax.random.poisson alone is off at this mean in float32.
  mu, n = 1e5, 100_000
  x = np.asarray(skellam(jax.random.key(5), mu, (n,)))
  support, pmf = _skellam_pmf(mu)
  _check_moments(x, support, pmf)
  p_value, _, _ = _chi_square_and_tv(x, support, pmf, math.sqrt(2 * mu))
  assert p_value > 1e-6, p_value


@pytest.mark.slow
def test_skellam_zero_mu_determinism_and_tracing():
  key = jax.random.key(11)
  assert not np.any(np.asarray(skellam(key, 0.0, (100,))))
  eager = np.asarray(skellam(key, 7.5, (500,)))
  np.testing.assert_array_equal(eager, np.asarray(skellam(key, 7.5, (500,))))
  assert np.any(eager != np.asarray(skellam(jax.random.key(12), 7.5, (500,))))
  np.testing.assert_array_equal(eager, np.asarray(jax.jit(lambda m: skellam(key, m, (500,)))(7.5)))
  keys = jax.random.split(key, 3)
  batched = jax.vmap(lambda k: skellam(k, 7.5, (20,)))(keys)
  for i in range(3):
    np.testing.assert_array_equal(batched[i], skellam(keys[i], 7.5, (20,)))
  mus = jnp.asarray([0.0, 3.0, 9000.0])
  per_mu = jax.vmap(lambda m: skellam(key, m, (20,)))(mus)
  for i, m in enumerate([0.0, 3.0, 9000.0]):
    np.testing.assert_array_equal(per_mu[i], skellam(key, m, (20,)))


@pytest.mark.parametrize("mu", [-0.5, math.nan, math.inf, 2 * samplers.MAX_MU, False])
def test_skellam_refuses_invalid_mu(mu):
  with pytest.raises(ValueError, match="skellam: mu="):
    skellam(jax.random.key(0), mu, (3,))
