"""Privacy accounting for DP federated averaging, through Google's `dp-accounting`.

Three mechanisms privatize the sum of `clients_per_round` clipped updates (L2 norm at
most `clip_norm` = C), each round drawn uniformly without replacement from `num_clients`:

- "gaussian": central Gaussian (the `dp` aggregator): N(0, (z C)^2) added to the sum.
- "ddg": distributed discrete Gaussian (Kairouz, Liu, Steinke, ICML 2021,
  arXiv:2102.06387): each client scales its rotated update by `gamma`, rounds it to
  integers (conditional randomized rounding) and adds a discrete Gaussian share.
- "skellam": distributed Skellam (Agarwal, Kairouz, Liu, NeurIPS 2021, arXiv:2110.04995):
  the same, with a Skellam share.

`noise_multiplier` (z) means the same for all three: the standard deviation of the
summed noise, per coordinate, is z * C in the units of the update (z * C * gamma in the
scaled integer units of DDG and Skellam); `local_noise` gives each client's share. The
modular wrap-around of secure aggregation is post-processing of the sum and costs no
privacy. The accounting is done by the `dp-accounting` library's RDP and PLD accountants;
this module only decides which event describes a round.

Decision 1, the neighbouring relation. Fixed-size sampling without replacement amplifies
privacy under REPLACE-one (a client's data swapped for another's; `num_clients` public),
not under add/remove, so the guarantee reported is user-level (epsilon, delta)-DP under
replace-one. Replacing one client moves the clipped sum by up to 2C, so the Gaussian's
noise multiplier relative to that sensitivity is z / 2. dp-accounting (0.6) feeds
`GaussianDpEvent.noise_multiplier` to its RDP formulas as if it were relative to the
replace-one sensitivity, not to C (google/differential-privacy issue #378, open): we pass
z / 2. `_rdp_scales_replace_one` checks the installed library, so a version that does the
halving itself gets z, not z / 4. Papers that report Poisson sampling under add/remove
with z get roughly half this epsilon; that number does not cover the fixed-size sampler.

Decision 2, the sampled event per accountant.
- RDP: `SampledWithoutReplacementDpEvent(num_clients, clients_per_round, Gaussian)` under
  REPLACE_ONE, which the RDP accountant computes with Wang, Balle, Kasiviswanathan
  (AISTATS 2019, Theorem 27, the bound for the subsampled Gaussian).
- PLD: dp-accounting's PLD accountant has no sampled-without-replacement event. We use
  `PoissonSampledDpEvent(q = clients_per_round / num_clients, Gaussian(z / 2))` under
  ADD_OR_REMOVE_ONE: it composes the pair (q N(2C, s^2) + (1 - q) N(0, s^2), N(0, s^2))
  and, separately, its reverse, and reports the larger epsilon. For epsilon >= 0 that
  pair dominates sampling without replacement under replace-one (Zhu, Dong, Wang,
  AISTATS 2022, subsampling without replacement), and it is attained: all other clients
  send -C e (or +C e), the one replaced sends +C e or -C e. A brute-force test (every
  1-D dataset pair on a grid, rounds composed through their privacy loss) finds the
  worst pair's delta equal to the library's. It is tighter than the RDP route (tested).

Decision 3, DDG and Skellam. dp-accounting has no event for either, and its subsampled
events accept only Gaussians. Each is expressed as the Gaussian event of the effective
noise multiplier whose RDP curve alpha / (2 z_eff^2) dominates the paper's RDP bound of
one round (without sampling) at every order alpha >= 1 (`effective_noise_multiplier`):
- DDG: Kairouz et al., Proposition 14 / Eq. (17) (the sum of n discrete Gaussians of
  scale sigma is not a discrete Gaussian; tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2
  k / (k + 1)) pays for it):
  D_alpha <= min(alpha A^2 / 2 + tau d, alpha/2 (A^2 + 2 B tau + tau^2 d),
                 alpha/2 (A + sqrt(d) tau)^2),
  with A = Delta_2 / (sqrt(n) sigma), B = Delta_1 / (sqrt(n) sigma). It needs sigma >= 1/2.
- Skellam: Agarwal et al., Theorem 3.5 (Corollary 3.6 for the distributed sum), for
  integer alpha > 1, with mu the summed noise's variance per coordinate:
  eps(alpha) <= alpha Delta_2^2 / (2 mu)
                + min(((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (4 mu^2), 3 Delta_1 / (2 mu)).
  Its RDP accountant uses integer orders only, since the bound is for integer alpha.
Delta_2 is the replace-one sensitivity after rounding: twice the conditional randomized
rounding bound of gamma C (`rounding.rounding_norm_bound`, Kairouz et al. Proposition 22;
the rounding is redrawn until the bound holds); Delta_1 = min(sqrt(d) Delta_2, Delta_2^2)
(integer vectors). Every bound is linear in alpha, xi + rho alpha, so the line through
its value at alpha = 1 dominates it for alpha >= 1: 1 / (2 z_eff^2) = rho + max(xi, 0)
(the least over the branches). Without sampling (clients_per_round == num_clients) the
RDP epsilon is thus a valid bound. What is approximated: with sampling, the library's
amplification (Theorem 27 above, or the Gaussian PLD) is that of the Gaussian of z_eff,
not of the discrete mechanism; the PLD route for DDG and Skellam likewise treats the sum
as that Gaussian. Both papers report their mechanisms match the Gaussian closely when
the rounding is fine; as gamma grows, z_eff -> z and the epsilons reach the central
Gaussian's (tested).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, cast

import dp_accounting
import numpy as np
from dp_accounting import mechanism_calibration
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant

from fedjax_compress.compression import arguments as check
from fedjax_compress.privacy.rounding import DEFAULT_BETA, rounding_norm_bound

MECHANISMS = ("gaussian", "ddg", "skellam")
ACCOUNTANTS = ("rdp", "pld")
# Skellam's RDP bound holds for integer orders: the library's integer default orders.
SKELLAM_ORDERS = tuple(range(2, 64)) + (128, 256, 512, 1024)
# dp-accounting's PLD accountant default; `epsilons_by_round` builds the same PLD.
PLD_DISCRETIZATION = 1e-4
_NEIGHBOURS = dp_accounting.NeighboringRelation


class DpParams(NamedTuple):
  """A run's privacy parameters: what `epsilon` and `epsilons_by_round` account.

  Attributes:
    mechanism: one of `MECHANISMS`.
    noise_multiplier: z, the summed noise's standard deviation over `clip_norm`, >= 0.
    clients_per_round: clients summed a round, sampled without replacement.
    num_clients: the population sampled from.
    rounds: the number of rounds.
    clip_norm: C, the L2 clip of an update (DDG and Skellam only).
    gamma: the scale before rounding to integers (DDG and Skellam only).
    dim: the number of coordinates rounded, after padding for the rotation (DDG and
      Skellam only).
    beta: the conditional rounding's parameter (`rounding.rounding_norm_bound`).
  """

  mechanism: str
  noise_multiplier: float
  clients_per_round: int
  num_clients: int
  rounds: int
  clip_norm: float | None = None
  gamma: float | None = None
  dim: int | None = None
  beta: float = DEFAULT_BETA


def _check_mechanism(
  owner, mechanism, noise_multiplier, clients_per_round, clip_norm, gamma, dim, beta
):
  """Checks the mechanism's arguments; returns (mechanism, z, n)."""
  mechanism = check.choice(owner, "mechanism", mechanism, MECHANISMS)
  noise_multiplier = check.real(owner, "noise_multiplier", noise_multiplier, 0.0)
  clients_per_round = check.integer(owner, "clients_per_round", clients_per_round, 1)
  if mechanism != "gaussian":
    for name, value in (("clip_norm", clip_norm), ("gamma", gamma), ("dim", dim)):
      if value is None:
        raise check.invalid(owner, name, value, f"given for mechanism={mechanism!r}")
    check.real(owner, "clip_norm", clip_norm, 0.0, lo_open=True)
    check.real(owner, "gamma", gamma, 0.0, lo_open=True)
    check.integer(owner, "dim", dim, 1)
    check.real(owner, "beta", beta, 0.0, 1.0, hi_open=True)
  return mechanism, noise_multiplier, clients_per_round


def local_noise(
  mechanism: str,
  noise_multiplier: float,
  *,
  clients_per_round: int,
  clip_norm: float,
  gamma: float = 1.0,
) -> float:
  """The parameter of each client's noise share that gives the summed noise z * C.

  The summed noise has standard deviation `noise_multiplier * clip_norm * gamma` per
  coordinate (in the scaled units: gamma = 1 for "gaussian"), split evenly over the
  `clients_per_round` shares:
  - "gaussian": the standard deviation a share would have, z C gamma / sqrt(n);
  - "ddg": the discrete Gaussian's sigma for `samplers.discrete_gaussian`, the same;
  - "skellam": mu for `samplers.skellam` (Poisson(mu) - Poisson(mu), variance 2 mu),
    (z C gamma)^2 / (2 n).
  """
  owner = "local_noise"
  mechanism = check.choice(owner, "mechanism", mechanism, MECHANISMS)
  z = check.real(owner, "noise_multiplier", noise_multiplier, 0.0)
  n = check.integer(owner, "clients_per_round", clients_per_round, 1)
  c = check.real(owner, "clip_norm", clip_norm, 0.0, lo_open=True)
  gamma = check.real(owner, "gamma", gamma, 0.0, lo_open=True)
  total = z * c * gamma
  return total**2 / (2 * n) if mechanism == "skellam" else total / math.sqrt(n)


def _ddg_rho(a: float, b: float, tau: float, dim: int) -> float:
  """rho of the line through alpha = 1 that dominates Proposition 14's bound."""
  return min(
    a * a / 2 + tau * dim,
    (a * a + 2 * b * tau + tau * tau * dim) / 2,
    (a + math.sqrt(dim) * tau) ** 2 / 2,
  )


def _skellam_rho(l2: float, l1: float, mu: float) -> float:
  """rho of the line through alpha = 1 that dominates Theorem 3.5's bound."""
  lead = l2 * l2 / (2 * mu)
  # alpha (Delta_2^2 / (2 mu^2)) + (6 Delta_1 - Delta_2^2) / (4 mu^2), or 3 Delta_1 / (2 mu).
  slope, offset = l2 * l2 / (2 * mu * mu), (6 * l1 - l2 * l2) / (4 * mu * mu)
  return lead + min(slope + max(offset, 0.0), 3 * l1 / (2 * mu))


def effective_noise_multiplier(
  mechanism: str,
  noise_multiplier: float,
  *,
  clients_per_round: int,
  clip_norm: float | None = None,
  gamma: float | None = None,
  dim: int | None = None,
  beta: float = DEFAULT_BETA,
) -> float:
  """The Gaussian noise multiplier (relative to C) whose RDP dominates one round's.

  "gaussian" returns `noise_multiplier`. "ddg" and "skellam" return z_eff <= z, with
  alpha / (2 (z_eff / 2)^2) >= the paper's RDP bound of the rounded sum under
  replace-one at every order alpha >= 1 (the module docstring has the bounds); z_eff
  approaches z as gamma grows. 0 noise gives 0.

  Raises:
    ValueError: naming the argument, for bad values, and for "ddg" when the clients'
      discrete Gaussian sigma = z C gamma / sqrt(n) is below 1/2 (Proposition 14's
      condition).
  """
  return _effective(
    "effective_noise_multiplier",
    mechanism,
    noise_multiplier,
    clients_per_round,
    clip_norm,
    gamma,
    dim,
    beta,
  )


def _effective(
  owner, mechanism, noise_multiplier, clients_per_round, clip_norm, gamma, dim, beta
) -> float:
  mechanism, z, n = _check_mechanism(
    owner, mechanism, noise_multiplier, clients_per_round, clip_norm, gamma, dim, beta
  )
  if mechanism == "gaussian" or z == 0:
    return z
  scaled_clip = gamma * clip_norm
  l2 = 2 * rounding_norm_bound(scaled_clip, dim, beta)  # replace-one: two clients' worth
  l1 = min(math.sqrt(dim) * l2, l2 * l2)
  total = z * scaled_clip  # the summed noise's standard deviation, integer units
  if mechanism == "ddg":
    sigma = total / math.sqrt(n)
    if sigma < 0.5:
      raise check.invalid(
        owner,
        "noise_multiplier",
        noise_multiplier,
        f"large enough that each client's discrete Gaussian sigma = noise_multiplier * "
        f"clip_norm * gamma / sqrt(clients_per_round) is >= 1/2 (Kairouz et al. "
        f"Proposition 14); it gives {sigma:.4g}",
      )
    k = np.arange(1, n)
    tau = 10 * float(np.sum(np.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1))))
    rho = _ddg_rho(l2 / total, l1 / total, tau, dim)
  else:
    rho = _skellam_rho(l2, l1, total * total)
  # alpha / (2 z_repl^2) = alpha rho, z_repl relative to the replace-one sensitivity;
  # relative to C it is twice that.
  return 2 / math.sqrt(2 * rho)


@functools.cache
def _rdp_scales_replace_one() -> bool:
  """Whether the installed RDP accountant doubles the sensitivity under REPLACE_ONE itself.

  dp-accounting 0.6 does not (issue #378): sampling everyone without replacement then
  gives the plain Gaussian's epsilon. A version that does gives more.
  """
  gaussian = dp_accounting.GaussianDpEvent(1.0)
  replace = rdp_privacy_accountant.RdpAccountant(neighboring_relation=_NEIGHBOURS.REPLACE_ONE)
  replace.compose(dp_accounting.SampledWithoutReplacementDpEvent(2, 2, gaussian))
  plain = rdp_privacy_accountant.RdpAccountant().compose(gaussian)
  return replace.get_epsilon(1e-5) > 1.5 * plain.get_epsilon(1e-5)


def _round_event(
  z_eff: float, clients_per_round: int, num_clients: int, accountant: str
) -> dp_accounting.DpEvent:
  """One round: Decision 2 of the module docstring."""
  if z_eff == 0:
    return dp_accounting.NonPrivateDpEvent()
  if accountant == "rdp":
    z = z_eff if _rdp_scales_replace_one() else z_eff / 2
    return dp_accounting.SampledWithoutReplacementDpEvent(
      num_clients, clients_per_round, dp_accounting.GaussianDpEvent(z)
    )
  return dp_accounting.PoissonSampledDpEvent(
    clients_per_round / num_clients, dp_accounting.GaussianDpEvent(z_eff / 2)
  )


def _check_params(owner: str, params: DpParams, accountant: str) -> tuple[DpParams, float]:
  """Checks every field; returns the params and the effective noise multiplier."""
  if not isinstance(params, DpParams):
    raise check.invalid(owner, "params", params, "a DpParams")
  check.choice(owner, "accountant", accountant, ACCOUNTANTS)
  num_clients = check.integer(owner, "num_clients", params.num_clients, 1)
  clients = check.integer(owner, "clients_per_round", params.clients_per_round, 1)
  if clients > num_clients:
    raise check.invalid(owner, "clients_per_round", clients, f"<= num_clients ({num_clients})")
  check.integer(owner, "rounds", params.rounds, 1)
  z_eff = _effective(
    owner,
    params.mechanism,
    params.noise_multiplier,
    clients,
    params.clip_norm,
    params.gamma,
    params.dim,
    params.beta,
  )
  return params, z_eff


def dp_event(
  mechanism: str,
  *,
  noise_multiplier: float,
  clients_per_round: int,
  num_clients: int,
  rounds: int,
  accountant: str = "rdp",
  clip_norm: float | None = None,
  gamma: float | None = None,
  dim: int | None = None,
  beta: float = DEFAULT_BETA,
) -> dp_accounting.DpEvent:
  """The `dp_accounting` event of `rounds` rounds, for `accountant` ("rdp" or "pld").

  `SelfComposedDpEvent(round, rounds)`, where a round is
  `SampledWithoutReplacementDpEvent` of the (effective) Gaussian for "rdp" and
  `PoissonSampledDpEvent` of its dominating pair for "pld" (the PLD accountant has no
  event for sampling without replacement): see the module docstring. Account it with
  `epsilon(event, delta, accountant)`, which picks the neighbouring relation it needs.
  Zero noise gives a `NonPrivateDpEvent` round (epsilon = inf).
  """
  params = DpParams(
    mechanism, noise_multiplier, clients_per_round, num_clients, rounds, clip_norm, gamma, dim, beta
  )
  params, z_eff = _check_params("dp_event", params, accountant)
  return dp_accounting.SelfComposedDpEvent(
    _round_event(z_eff, params.clients_per_round, params.num_clients, accountant), params.rounds
  )


def _sampled_without_replacement(event: dp_accounting.DpEvent) -> bool:
  if isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent):
    return True
  if isinstance(event, dp_accounting.ComposedDpEvent):
    return any(_sampled_without_replacement(e) for e in event.events)
  inner = getattr(event, "event", None)
  return isinstance(inner, dp_accounting.DpEvent) and _sampled_without_replacement(inner)


def _accountant(accountant: str, replace: bool, mechanism: str | None = None):
  """A fresh accountant: REPLACE_ONE if the event samples without replacement (RDP)."""
  if accountant == "pld":
    if replace:
      raise ValueError(
        "epsilon: the PLD accountant has no event for sampling without "
        "replacement; build the event with dp_event(..., accountant='pld')."
      )
    return pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
  relation = _NEIGHBOURS.REPLACE_ONE if replace else _NEIGHBOURS.ADD_OR_REMOVE_ONE
  orders = SKELLAM_ORDERS if mechanism == "skellam" else None
  return rdp_privacy_accountant.RdpAccountant(orders, relation)


def _check_delta(owner: str, delta) -> float:
  return check.real(owner, "delta", delta, 0.0, 1.0, lo_open=True, hi_open=True)


def epsilon(
  event_or_params: dp_accounting.DpEvent | DpParams, delta: float, accountant: str = "rdp"
) -> float:
  """Epsilon at `delta` of a `DpParams`, or of a `dp_accounting` event.

  A `DpParams` is turned into `dp_event(..., accountant=accountant)` (and Skellam gets
  integer RDP orders). An event is accounted as it is: under REPLACE_ONE if it contains
  a `SampledWithoutReplacementDpEvent` (RDP only), else under ADD_OR_REMOVE_ONE.
  Returns inf for a non-private event.
  """
  owner = "epsilon"
  delta = _check_delta(owner, delta)
  check.choice(owner, "accountant", accountant, ACCOUNTANTS)
  mechanism = None
  if isinstance(event_or_params, DpParams):
    params, z_eff = _check_params(owner, event_or_params, accountant)
    mechanism = params.mechanism
    event = dp_accounting.SelfComposedDpEvent(
      _round_event(z_eff, params.clients_per_round, params.num_clients, accountant), params.rounds
    )
  elif isinstance(event_or_params, dp_accounting.DpEvent):
    event = event_or_params
  else:
    raise check.invalid(
      owner, "event_or_params", event_or_params, "a DpParams or a dp_accounting.DpEvent"
    )
  acc = _accountant(accountant, _sampled_without_replacement(event), mechanism)
  return float(acc.compose(event).get_epsilon(delta))


def epsilons_by_round(params: DpParams, delta: float, accountant: str = "rdp") -> np.ndarray:
  """Epsilon at `delta` after each round 1..params.rounds, a float64 array.

  RDP is additive over rounds: the accountant composes one round once, and round t's
  epsilon is `rdp_privacy_accountant.compute_epsilon(orders, t * rdp, delta)` (what the
  accountant's `get_epsilon` computes): cheap, its cost mostly the one round's RDP.
  PLD: the library's privacy loss distribution of one round (the one the PLD accountant
  builds for the round's event) is composed round after round and read at every round:
  exact, but far slower. Use RDP for a per-round log (timings: benchmarks/RESULTS.md,
  "Privacy accounting cost").
  """
  owner = "epsilons_by_round"
  delta = _check_delta(owner, delta)
  params, z_eff = _check_params(owner, params, accountant)
  rounds = params.rounds
  if z_eff == 0:
    return np.full(rounds, np.inf)
  one = _round_event(z_eff, params.clients_per_round, params.num_clients, accountant)
  if accountant == "rdp":
    acc = _accountant("rdp", _sampled_without_replacement(one), params.mechanism).compose(one)
    orders, rdp = acc.orders, acc.rdp
    return np.array(
      [
        rdp_privacy_accountant.compute_epsilon(orders, t * rdp, delta)[0]
        for t in range(1, rounds + 1)
      ],
      dtype=np.float64,
    )
  pld_one = privacy_loss_distribution.from_gaussian_mechanism(
    standard_deviation=one.event.noise_multiplier,
    value_discretization_interval=PLD_DISCRETIZATION,
    sampling_prob=one.sampling_probability,
  )
  out, pld = np.empty(rounds), pld_one
  for t in range(rounds):
    if t:
      pld = pld.compose(pld_one)
    out[t] = pld.get_epsilon_for_delta(delta)
  return out


def noise_multiplier_for_epsilon(
  target_epsilon: float,
  delta: float,
  *,
  clients_per_round: int,
  num_clients: int,
  rounds: int,
  mechanism: str = "gaussian",
  accountant: str = "rdp",
  clip_norm: float | None = None,
  gamma: float | Callable[[float], float] | None = None,
  dim: int | None = None,
  beta: float = DEFAULT_BETA,
  tol: float = 1e-4,
) -> float:
  """The smallest noise multiplier (within `tol`) whose epsilon at `delta` is <= the target.

  Calibrated before a run by `dp_accounting.mechanism_calibration.calibrate_dp_mechanism`
  (Brent's method over the accountant, then a check that the result meets the target).
  The bracket is found here by doubling from z = 1 with the same accountant; for DDG the
  search starts at the least z Proposition 14 allows. Raises ValueError, naming the
  argument, for bad inputs, and when no z in [1e-3, 1e4] (or DDG's least) brackets it.

  `gamma` may be a function of z (the scale that fits a bit width shrinks as the noise
  grows: `plan.make_plan`); each z tried is then accounted with its own gamma.
  """
  owner = "noise_multiplier_for_epsilon"
  target = check.real(owner, "target_epsilon", target_epsilon, 0.0, lo_open=True)
  delta = _check_delta(owner, delta)
  tol = check.real(owner, "tol", tol, 0.0, lo_open=True)
  gamma_of = gamma if callable(gamma) else lambda z: gamma
  mechanism, _, _ = _check_mechanism(
    owner, mechanism, 1.0, clients_per_round, clip_norm, gamma_of(1.0), dim, beta
  )
  lowest = 1e-3
  if mechanism == "ddg":  # Proposition 14 needs sigma >= 1/2.
    # _check_mechanism has checked that DDG's clip_norm and gamma are given.
    assert clip_norm is not None
    lowest = max(
      lowest,
      _least_ddg_noise(cast(Callable[[float], float], gamma_of), clip_norm, clients_per_round),
    )
  start = max(lowest, 1.0)
  probe = DpParams(
    mechanism, start, clients_per_round, num_clients, rounds, clip_norm, gamma_of(start), dim, beta
  )
  _check_params(owner, probe, accountant)

  def event(z: float) -> dp_accounting.DpEvent:
    z_eff = _effective(
      owner, mechanism, float(z), clients_per_round, clip_norm, gamma_of(float(z)), dim, beta
    )
    return dp_accounting.SelfComposedDpEvent(
      _round_event(z_eff, clients_per_round, num_clients, accountant), rounds
    )

  def fresh():
    return _accountant(accountant, accountant == "rdp", mechanism)

  @functools.cache
  def gap(z: float) -> float:
    return fresh().compose(event(z)).get_epsilon(delta) - target

  if gap(start) > 0:
    lo, hi = start, 2 * start
    while gap(hi) > 0:
      if hi >= 1e4:
        raise check.invalid(
          owner, "target_epsilon", target_epsilon, "reachable with a noise multiplier <= 1e4"
        )
      lo, hi = hi, 2 * hi
  else:
    lo, hi = max(start / 2, lowest), start
    while gap(lo) <= 0:
      if lo == lowest:
        return lo  # Even the least noise allowed meets the target.
      lo, hi = max(lo / 2, lowest), lo
  return float(
    mechanism_calibration.calibrate_dp_mechanism(
      fresh, event, target, delta, mechanism_calibration.ExplicitBracketInterval(lo, hi), tol=tol
    )
  )


def _least_ddg_noise(gamma_of: Callable[[float], float], clip_norm: float, clients: int) -> float:
  """The least z with each client's sigma = z C gamma(z) / sqrt(n) >= 1/2 (Proposition 14).

  sigma grows with z (gamma(z) shrinks, but z gamma(z) grows), so bisection finds it.
  """

  def sigma(z: float) -> float:
    return z * clip_norm * gamma_of(z) / math.sqrt(clients)

  lo, hi = 0.0, 1e-3
  while sigma(hi) < 0.5:
    if hi >= 1e4:
      raise ValueError(
        "noise_multiplier_for_epsilon: no noise multiplier <= 1e4 gives DDG's "
        "clients a discrete Gaussian sigma >= 1/2: raise the bits."
      )
    lo, hi = hi, 2 * hi
  if lo == 0.0:
    return 0.0
  for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (lo, mid) if sigma(mid) >= 0.5 else (mid, hi)
  return hi
