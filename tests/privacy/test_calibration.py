"""fedjax_compress.privacy.calibration: bits for the modular sum, gamma for a bit budget."""

import math

import numpy as np
import pytest

from fedjax_compress.privacy import calibration as cal

BASE = dict(
  clients=20, clip_norm=1.0, gamma=100.0, dim=1024, noise_stddev=1.0, failure_probability=1e-3
)


def bits(**changes):
  return cal.bits_for_modular_sum(**(BASE | changes))


def test_bits_match_the_stated_bound():
  n, c, g, d, s, p = 20, 1.0, 100.0, 1024, 1.0, 1e-3
  variance = g**2 * ((n * c) ** 2 / d + s**2) + n / 4
  m = math.sqrt(2 * variance * math.log(2 * d / p))
  assert cal.max_abs_coordinate(**BASE) == pytest.approx(m, rel=1e-12)
  assert bits() == math.ceil(math.log2(2 * math.floor(m) + 1))


def test_more_clients_noise_scale_or_confidence_need_more_bits():
  for name, values in [
    ("clients", [1, 10, 100, 1000, 10_000]),
    ("noise_stddev", [0.0, 1.0, 4.0, 16.0, 64.0]),
    ("gamma", [1.0, 10.0, 100.0, 1000.0]),
    ("clip_norm", [0.1, 1.0, 10.0, 100.0]),
    ("failure_probability", [0.5, 1e-3, 1e-12, 1e-300]),
  ]:
    got = [bits(**{name: v}) for v in values]
    assert all(a <= b for a, b in zip(got, got[1:])), (name, got)
    assert got[0] < got[-1], (name, got)


@pytest.mark.parametrize("target", [5, 8, 12, 16, 20, 24, 32, 40])
def test_gamma_for_bits_is_the_largest_gamma_that_fits(target):
  kw = {k: v for k, v in BASE.items() if k != "gamma"}
  gamma = cal.gamma_for_bits(target, **kw)
  assert cal.bits_for_modular_sum(gamma=gamma, **kw) == target
  assert cal.bits_for_modular_sum(gamma=gamma * (1 + 1e-9), **kw) == target + 1


def test_gamma_for_bits_refuses_a_width_too_small_for_the_rounding():
  kw = {k: v for k, v in BASE.items() if k != "gamma"}
  with pytest.raises(ValueError, match=r"\bbits=4.*rounding errors of 20 clients"):
    cal.gamma_for_bits(4, **kw)


@pytest.mark.parametrize(
  "name, value",
  [
    ("clients", 0),
    ("dim", 0),
    ("clip_norm", -1.0),
    ("noise_stddev", -1.0),
    ("gamma", 0.0),
    ("failure_probability", 0.0),
    ("failure_probability", 1.0),
    ("rho", 0.0),
  ],
)
def test_bad_arguments_raise_value_error_naming_them(name, value):
  with pytest.raises(ValueError, match=rf"\b{name}="):
    bits(**{name: value})


def _hadamard(d):
  h = np.ones((1, 1))
  while h.shape[0] < d:
    h = np.block([[h, h], [h, -h]])
  return h


def _wrap_frequency(rng, bits_, *, clients, clip_norm, gamma, dim, noise_stddev, trials, aligned):
  """Simulates the scaled, rotated, rounded, noised sum; how often some coordinate wraps."""
  h = _hadamard(dim) / math.sqrt(dim)
  x = rng.normal(size=(trials, 1 if aligned else clients, dim))
  x *= np.minimum(1.0, clip_norm / np.linalg.norm(x, axis=-1, keepdims=True))
  if aligned:  # The worst case: every client sends the same vector of norm clip_norm.
    x = np.broadcast_to(
      x * clip_norm / np.linalg.norm(x, axis=-1, keepdims=True), (trials, clients, dim)
    )
  signs = rng.choice([-1.0, 1.0], size=(trials, 1, dim))  # one rotation per round
  y = gamma * (x * signs) @ h.T
  low = np.floor(y)
  rounded = low + (rng.random(y.shape) < y - low)
  total = rounded.sum(axis=1) + np.rint(rng.normal(scale=gamma * noise_stddev, size=(trials, dim)))
  return float(np.mean(np.abs(total).max(axis=-1) > 2 ** (bits_ - 1) - 1))


@pytest.mark.parametrize("aligned", [True, False])
def test_monte_carlo_wrap_around_is_rarer_than_the_failure_probability(aligned):
  rng = np.random.default_rng(0)
  setting = dict(clients=10, clip_norm=1.0, dim=256, noise_stddev=0.5)
  p, width = 0.01, 12
  gamma = cal.gamma_for_bits(width, failure_probability=p, **setting)
  assert cal.bits_for_modular_sum(gamma=gamma, failure_probability=p, **setting) == width
  trials = 2000
  freq = _wrap_frequency(rng, width, gamma=gamma, trials=trials, aligned=aligned, **setting)
  assert freq <= p
  if aligned:  # The bound is not vacuous: one bit fewer wraps most of the time.
    assert _wrap_frequency(rng, width - 1, gamma=gamma, trials=500, aligned=True, **setting) > 0.5
