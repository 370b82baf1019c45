"""Randomized and conditional rounding (privacy/rounding.py) against their bounds.

As for the samplers (test_samplers.py): every statistical tolerance is Z standard errors of
the estimate, and the seeds are fixed.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress.privacy import rounding

Z = 5.0  # standard errors allowed


def test_randomized_round_is_integral_and_unbiased():
  x = jnp.asarray(np.random.default_rng(0).uniform(-20, 20, 64), jnp.float32)
  draws = 20_000
  keys = jax.random.split(jax.random.key(0), draws)
  r = np.asarray(jax.jit(jax.vmap(lambda k: rounding.randomized_round(k, x)))(keys))
  assert r.dtype == np.int32
  low = np.floor(np.asarray(x))
  assert np.all((r == low) | (r == low + 1))  # each coordinate moves by less than 1
  frac = np.asarray(x, np.float64) - low
  # Per coordinate: a Bernoulli(frac) mean, Z standard errors (+ the 2^-23 grid).
  se = np.sqrt(frac * (1 - frac) / draws)
  assert np.all(np.abs(r.mean(axis=0) - np.asarray(x, np.float64)) <= Z * se + 2**-23)
  # The cohort mean of all coordinates together, far tighter.
  assert (
    abs((r - np.asarray(x, np.float64)).mean())
    <= Z * math.sqrt(np.sum(frac * (1 - frac)) / draws) / x.size
  )


def test_randomized_round_keeps_integers_and_is_deterministic():
  key = jax.random.key(3)
  ints = jnp.asarray([-3.0, 0.0, 5.0, 2.0**24, -(2.0**30)])
  np.testing.assert_array_equal(
    rounding.randomized_round(key, ints), np.asarray(ints).astype(np.int32)
  )
  np.testing.assert_array_equal(rounding.randomized_round(key, jnp.asarray([4, -2])), [4, -2])
  x = jnp.linspace(-2, 2, 101)
  np.testing.assert_array_equal(
    rounding.randomized_round(key, x), rounding.randomized_round(key, x)
  )


def test_rounding_norm_bound_matches_the_formula_and_holds():
  norm, dim, beta = 30.0, 400, math.exp(-0.5)
  bound = rounding.rounding_norm_bound(norm, dim)
  expected = math.sqrt(
    norm**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(dim) / 2)
  )
  assert bound == pytest.approx(expected, rel=1e-12)
  assert norm <= bound <= norm + math.sqrt(dim)
  # Tiny norm in many dimensions: the certain bound norm + sqrt(d) is smaller.
  assert rounding.rounding_norm_bound(0.0, 4, 1e-9) == pytest.approx(2.0)
  assert rounding.rounding_norm_bound(3.0, 16, 0.0) == 7.0
  # One draw exceeds the bound with probability at most beta (Kairouz et al.).
  rng = np.random.default_rng(1)
  x = rng.normal(size=dim)
  x = jnp.asarray(x / np.linalg.norm(x) * norm, jnp.float32)
  keys = jax.random.split(jax.random.key(1), 4000)
  r = np.asarray(jax.jit(jax.vmap(lambda k: rounding.randomized_round(k, x)))(keys))
  exceed = np.mean(np.linalg.norm(r.astype(np.float64), axis=1) > bound)
  assert exceed <= beta


def test_conditional_rounding_respects_the_bound():
  rng = np.random.default_rng(2)
  dim, norm = 1000, 20.0
  x = rng.normal(size=dim)
  x = jnp.asarray(x / np.linalg.norm(x) * norm, jnp.float32)
  # A bound that one draw meets about a third of the time, so retries happen.
  free = jax.vmap(lambda k: rounding.randomized_round(k, x))(
    jax.random.split(jax.random.key(4), 300)
  )
  bound = float(np.quantile(np.linalg.norm(np.asarray(free, np.float64), axis=1), 0.3))
  keys = jax.random.split(jax.random.key(5), 300)
  out = jax.jit(jax.vmap(lambda k: rounding.conditional_randomized_round(k, x, bound)))(keys)
  values = np.asarray(out.values).astype(np.int64)
  assert out.values.dtype == jnp.int32 and np.all(np.asarray(out.accepted))
  assert np.all(np.sqrt(np.sum(values**2, axis=1)) <= bound)  # exact, in int64
  tries = np.asarray(out.tries)
  assert tries.min() == 1 and tries.max() > 1
  low = np.floor(np.asarray(x))
  assert np.all((values == low) | (values == low + 1))
  # The first draw that fits: draw i is randomized_round(fold_in(key, i), x).
  k, t = keys[0], int(tries[0])
  np.testing.assert_array_equal(
    values[0], rounding.randomized_round(jax.random.fold_in(k, t - 1), x)
  )


def test_conditional_rounding_loose_bound_takes_one_draw():
  key = jax.random.key(9)
  x = jnp.asarray([0.3, -1.7, 2.5])
  out = rounding.conditional_randomized_round(key, x, 100.0)
  assert int(out.tries) == 1 and bool(out.accepted)
  np.testing.assert_array_equal(
    out.values, rounding.randomized_round(jax.random.fold_in(key, 0), x)
  )


def test_conditional_rounding_failure_is_reported_not_hidden():
  # 100 coordinates of 0.5: only the all-zero rounding (probability 2^-100) has norm 0.
  x = jnp.full((100,), 0.5)
  out = rounding.conditional_randomized_round(jax.random.key(0), x, 0.0, max_tries=7)
  assert not bool(out.accepted) and int(out.tries) == 7
  assert not np.any(np.asarray(out.values))  # zeros: within any bound, never over it


def test_within_norm_is_never_wrongly_true():
  # Integer vectors whose norm is exactly the bound, or just above it.
  v = jnp.asarray([3, 4])  # norm 5
  assert not bool(rounding.within_norm(v, 4.999999))
  big = jnp.full((1_000_000,), 3000, jnp.int32)  # squared norm 9e12, far beyond 2^24
  exact = 3000 * 1000.0  # norm 3e6
  assert bool(rounding.within_norm(big, exact * (1 + 1e-5)))
  assert not bool(rounding.within_norm(big, exact * (1 - 1e-7)))
  assert not bool(rounding.within_norm(big, exact))  # at the bound: refused, by the margin


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(norm_bound=-1.0), "norm_bound=-1.0"),
    (dict(norm_bound=math.nan), "norm_bound=nan"),
    (dict(norm_bound=1.0, max_tries=0), "max_tries=0"),
    (dict(norm_bound=1.0, max_tries=2.0), "max_tries=2.0"),
  ],
)
def test_conditional_rounding_refuses_invalid_arguments(kwargs, match):
  with pytest.raises(ValueError, match=f"conditional_randomized_round: {match}"):
    rounding.conditional_randomized_round(jax.random.key(0), jnp.ones(3), **kwargs)


@pytest.mark.parametrize(
  "args, match",
  [
    ((-1.0, 3), "norm=-1.0"),
    ((1.0, -3), "dim=-3"),
    ((1.0, 3.0), "dim=3.0"),
    ((1.0, 3, 1.0), "beta=1.0"),
    ((1.0, 3, -0.1), "beta=-0.1"),
  ],
)
def test_rounding_norm_bound_refuses_invalid_arguments(args, match):
  with pytest.raises(ValueError, match=f"rounding_norm_bound: {match}"):
    rounding.rounding_norm_bound(*args)
