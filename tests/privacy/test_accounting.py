"""fedjax_compress.privacy.accounting: events, epsilons and calibration through dp-accounting."""

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from fedjax_compress.privacy import accounting as acc

DELTA = 1e-5
REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE
# A small setting: every RDP evaluation of sampling without replacement costs ~0.3 s.
N, M, T = 200, 20, 50


def gaussian(z=1.0, rounds=T, clients=M, population=N):
  return acc.DpParams("gaussian", z, clients, population, rounds)


def rounded(mechanism, gamma, z=1.0, rounds=T, dim=1024):
  return acc.DpParams(mechanism, z, M, N, rounds, clip_norm=1.0, gamma=gamma, dim=dim)


def test_installed_rdp_accountant_does_not_double_replace_one_sensitivity():
  # google/differential-privacy#378: the event's noise multiplier is taken relative to the
  # replace-one sensitivity (2C), so accounting.py passes z / 2. If this fails, the library
  # now scales by itself; `_round_event` adapts, but recheck the direct comparisons below.
  assert not acc._rdp_scales_replace_one()


def test_gaussian_rdp_equals_dp_accounting_called_directly():
  z = 1.3
  expected_event = dp_accounting.SelfComposedDpEvent(
    dp_accounting.SampledWithoutReplacementDpEvent(N, M, dp_accounting.GaussianDpEvent(z / 2)), T
  )
  event = acc.dp_event("gaussian", noise_multiplier=z, clients_per_round=M, num_clients=N, rounds=T)
  assert event == expected_event
  direct = rdp_privacy_accountant.RdpAccountant(neighboring_relation=REPLACE_ONE)
  expected = direct.compose(expected_event).get_epsilon(DELTA)
  assert acc.epsilon(gaussian(z), DELTA) == pytest.approx(expected, rel=1e-12)
  assert acc.epsilon(event, DELTA) == pytest.approx(expected, rel=1e-12)


def test_gaussian_pld_equals_dp_accounting_called_directly():
  z, rounds, clients, population = 1.5, 5, 50, 100
  expected_event = dp_accounting.SelfComposedDpEvent(
    dp_accounting.PoissonSampledDpEvent(clients / population, dp_accounting.GaussianDpEvent(z / 2)),
    rounds,
  )
  event = acc.dp_event(
    "gaussian",
    noise_multiplier=z,
    clients_per_round=clients,
    num_clients=population,
    rounds=rounds,
    accountant="pld",
  )
  assert event == expected_event
  expected = pld_privacy_accountant.PLDAccountant().compose(expected_event).get_epsilon(DELTA)
  got = acc.epsilon(gaussian(z, rounds, clients, population), DELTA, "pld")
  assert got == pytest.approx(expected, rel=1e-12)


def test_everyone_sampled_is_the_gaussian_with_twice_the_clip_as_sensitivity():
  # Replace-one moves the sum by up to 2C: without sampling, both accountants must give
  # the Gaussian mechanism of sensitivity 2 (independently of how the library scales).
  z, rounds = 2.0, 10
  params = gaussian(z, rounds, clients=N, population=N)
  rdp = rdp_privacy_accountant.RdpAccountant().compose(
    dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z / 2), rounds)
  )
  assert acc.epsilon(params, DELTA) == pytest.approx(rdp.get_epsilon(DELTA), rel=1e-9)
  # The PLD accountant doubles the sensitivity itself under REPLACE_ONE.
  pld = pld_privacy_accountant.PLDAccountant(REPLACE_ONE).compose(
    dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds)
  )
  assert acc.epsilon(params, DELTA, "pld") == pytest.approx(pld.get_epsilon(DELTA), rel=1e-3)


def test_pld_is_tighter_than_rdp_but_close():
  params = gaussian(1.0, rounds=20, clients=50, population=500)
  rdp, pld = acc.epsilon(params, DELTA), acc.epsilon(params, DELTA, "pld")
  assert 0.5 * rdp < pld <= rdp


def test_epsilon_decreases_with_noise_and_grows_with_rounds():
  by_noise = [acc.epsilon(gaussian(z), DELTA) for z in (0.7, 1.0, 2.0, 4.0)]
  assert all(a > b for a, b in zip(by_noise, by_noise[1:]))
  by_rounds = acc.epsilons_by_round(gaussian(1.0, rounds=200), DELTA)
  assert np.all(np.diff(by_rounds) > 0)
  pld = [acc.epsilon(gaussian(z, rounds=3, clients=N), DELTA, "pld") for z in (1.0, 2.0)]
  assert pld[0] > pld[1]


def test_epsilons_by_round_equal_epsilon_of_that_many_rounds():
  params = gaussian(1.2, rounds=30)
  by_round = acc.epsilons_by_round(params, DELTA)
  assert by_round.shape == (30,) and by_round.dtype == np.float64
  for t in (1, 7, 30):
    assert by_round[t - 1] == pytest.approx(acc.epsilon(params._replace(rounds=t), DELTA), rel=1e-9)
  skellam = rounded("skellam", gamma=50.0, rounds=12)
  assert acc.epsilons_by_round(skellam, DELTA)[-1] == pytest.approx(
    acc.epsilon(skellam, DELTA), rel=1e-9
  )


def test_pld_epsilons_by_round_equal_epsilon_of_that_many_rounds():
  params = gaussian(1.5, rounds=3, clients=50, population=100)
  by_round = acc.epsilons_by_round(params, DELTA, "pld")
  for t in (1, 3):
    expected = acc.epsilon(params._replace(rounds=t), DELTA, "pld")
    assert by_round[t - 1] == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_rounded_mechanisms_approach_the_central_gaussian_as_gamma_grows(mechanism):
  z = 1.0
  central = acc.epsilon(gaussian(z), DELTA)
  zs = [
    acc.effective_noise_multiplier(
      mechanism, z, clients_per_round=M, clip_norm=1.0, gamma=g, dim=1024
    )
    for g in (30.0, 100.0, 1e3, 1e5)
  ]
  assert all(a < b for a, b in zip(zs, zs[1:])) and zs[-1] < z
  assert zs[-1] == pytest.approx(z, rel=1e-3)
  coarse = acc.epsilon(rounded(mechanism, 30.0), DELTA)
  fine = acc.epsilon(rounded(mechanism, 1e5), DELTA)
  assert coarse > fine >= central
  assert fine == pytest.approx(central, rel=3e-3)


def test_ddg_needs_client_sigma_of_at_least_one_half():
  # sigma = z * C * gamma / sqrt(n) = 1 * 1 * 2 / sqrt(20) < 1/2.
  with pytest.raises(ValueError, match="noise_multiplier.*Proposition 14"):
    acc.effective_noise_multiplier(
      "ddg", 1.0, clients_per_round=20, clip_norm=1.0, gamma=2.0, dim=8
    )


def test_local_noise_splits_the_summed_noise_over_the_clients():
  n, z, c, gamma = 16, 1.2, 0.5, 300.0
  total = z * c * gamma
  assert acc.local_noise("ddg", z, clients_per_round=n, clip_norm=c, gamma=gamma) == (
    pytest.approx(total / 4)
  )
  mu = acc.local_noise("skellam", z, clients_per_round=n, clip_norm=c, gamma=gamma)
  assert n * 2 * mu == pytest.approx(total**2)  # Skellam(mu) has variance 2 mu


def test_calibration_round_trips_rdp():
  target = 3.0
  z = acc.noise_multiplier_for_epsilon(
    target, DELTA, clients_per_round=M, num_clients=N, rounds=T, tol=1e-4
  )
  got = acc.epsilon(gaussian(z), DELTA)
  assert got <= target and got == pytest.approx(target, rel=1e-3)
  assert acc.epsilon(gaussian(z - 2e-4), DELTA) > target  # the least such noise, within tol


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_calibration_round_trips_rounded_mechanisms(mechanism):
  kw = dict(clip_norm=1.0, gamma=200.0, dim=1024)
  z = acc.noise_multiplier_for_epsilon(
    4.0, DELTA, clients_per_round=M, num_clients=N, rounds=T, mechanism=mechanism, tol=1e-3, **kw
  )
  got = acc.epsilon(rounded(mechanism, 200.0, z), DELTA)
  assert got <= 4.0 and got == pytest.approx(4.0, rel=1e-2)
  assert acc.epsilon(gaussian(z), DELTA) < got  # rounding costs privacy at the same noise


def test_calibration_round_trips_pld():
  # Everyone sampled keeps the PLD fast.
  z = acc.noise_multiplier_for_epsilon(
    2.0, DELTA, clients_per_round=10, num_clients=10, rounds=20, accountant="pld", tol=1e-4
  )
  got = acc.epsilon(gaussian(z, rounds=20, clients=10, population=10), DELTA, "pld")
  assert got <= 2.0 and got == pytest.approx(2.0, rel=1e-3)


def test_no_noise_is_not_private():
  assert acc.epsilon(gaussian(0.0), DELTA) == math.inf
  assert acc.epsilon(gaussian(0.0, clients=N), DELTA, "pld") == math.inf
  assert np.all(np.isinf(acc.epsilons_by_round(gaussian(0.0, rounds=4), DELTA)))


@pytest.mark.parametrize(
  "kwargs, argument",
  [
    (dict(delta=0.0), "delta"),
    (dict(delta=1.0), "delta"),
    (dict(delta=-1e-5), "delta"),
    (dict(params=gaussian(clients=N + 1)), "clients_per_round"),
    (dict(params=gaussian(z=-0.5)), "noise_multiplier"),
    (dict(params=gaussian(rounds=0)), "rounds"),
    (dict(params=acc.DpParams("laplace", 1.0, M, N, T)), "mechanism"),
    (dict(params=acc.DpParams("ddg", 1.0, M, N, T, clip_norm=1.0, dim=8)), "gamma"),
    (dict(accountant="moments"), "accountant"),
  ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(kwargs, argument):
  call = dict(params=gaussian(), delta=DELTA, accountant="rdp") | kwargs
  with pytest.raises(ValueError, match=rf"\b{argument}="):
    acc.epsilon(call["params"], call["delta"], call["accountant"])


def test_bad_calibration_and_event_inputs_raise_value_error_naming_the_argument():
  common = dict(clients_per_round=M, num_clients=N, rounds=T)
  with pytest.raises(ValueError, match=r"\bdelta="):
    acc.noise_multiplier_for_epsilon(1.0, 1.5, **common)
  with pytest.raises(ValueError, match=r"\btarget_epsilon="):
    acc.noise_multiplier_for_epsilon(0.0, DELTA, **common)
  with pytest.raises(ValueError, match=r"\bclients_per_round="):
    acc.noise_multiplier_for_epsilon(1.0, DELTA, clients_per_round=N + 1, num_clients=N, rounds=T)
  with pytest.raises(ValueError, match=r"\bnoise_multiplier="):
    acc.dp_event("gaussian", noise_multiplier=-1.0, **common)
  with pytest.raises(ValueError, match=r"\bclients_per_round="):
    acc.dp_event("gaussian", noise_multiplier=1.0, clients_per_round=5, num_clients=4, rounds=1)
  with pytest.raises(ValueError, match="PLD accountant has no event"):
    acc.epsilon(acc.dp_event("gaussian", noise_multiplier=1.0, **common), DELTA, "pld")


def test_pld_event_dominates_sampling_without_replacement_by_brute_force():
  # The PLD route accounts the pair (q N(2C) + (1 - q) N(0), N(0)) and its reverse. Check it
  # against the real mechanism: 1-D sums of 2 of 4 clients' values in [-1, 1] (C = 1, z = 1),
  # every dataset pair on a grid, T rounds composed through their privacy loss (FFT).
  import itertools

  clients, per_round, rounds, sigma = 4, 2, 4, 1.0
  xs = np.linspace(-10, 12, 8001)
  grid = np.linspace(-25, 25, 2**12 + 1)
  step = grid[1] - grid[0]

  def density(data):
    subsets = list(itertools.combinations(data, per_round))
    return sum(np.exp(-((xs - sum(s)) ** 2) / (2 * sigma**2)) for s in subsets) / (
      len(subsets) * math.sqrt(2 * math.pi) * sigma
    )

  def deltas(a, b, epsilons):
    loss = np.log(a) - np.log(b)
    pmf = np.bincount(
      np.clip(np.round((loss - grid[0]) / step).astype(int), 0, len(grid) - 1),
      weights=a * (xs[1] - xs[0]),
      minlength=len(grid),
    )
    size = 1 << (rounds * len(grid)).bit_length()
    composed = np.maximum(np.fft.irfft(np.fft.rfft(pmf, size) ** rounds, size), 0)
    losses = rounds * grid[0] + step * np.arange(size)
    return np.array([np.sum(composed * np.maximum(1 - np.exp(e - losses), 0)) for e in epsilons])

  epsilons = [0.5, 1.0, 2.0]
  worst = np.zeros(len(epsilons))
  for others in itertools.combinations_with_replacement([-1.0, 0.0, 1.0], clients - 1):
    for x, y in itertools.permutations([-1.0, 0.0, 1.0], 2):
      worst = np.maximum(worst, deltas(density((x,) + others), density((y,) + others), epsilons))
  event = acc.dp_event(
    "gaussian",
    noise_multiplier=sigma,
    clients_per_round=per_round,
    num_clients=clients,
    rounds=rounds,
    accountant="pld",
  )
  pld = pld_privacy_accountant.PLDAccountant().compose(event)
  library = np.array([pld.get_delta(e) for e in epsilons])
  assert np.all(worst <= library * (1 + 1e-3))
  assert np.all(worst >= library * 0.99)  # and the pair is attained: the bound is tight
