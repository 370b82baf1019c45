"""A DP run's plan: everything fixed before its first round, and what it guarantees.

A private aggregator (`presets.dp_aggregator`, `privacy.distributed_dp`) is configured
by a clip, a noise level (a noise multiplier, or a target epsilon to calibrate one) and,
for the distributed mechanisms, a bit width. The rest follows from the run: the model's
size, the clients per round, the population and the number of rounds. `make_plan`
resolves all of it into one `DpPlan`, before any training, so that the run can print
and log what it does, and `DpPlan.epsilons` accounts it round by round.

Decisions:
- The noise multiplier z means the same for every mechanism: the summed noise has
  standard deviation z * clip_norm per coordinate (`accounting`). A target epsilon is
  met by the least z found by `accounting.noise_multiplier_for_epsilon` (the
  accountant is dp-accounting's; nothing is hand-written).
- For DDG and Skellam the scale gamma is the largest that fits the bit width
  (`calibration.gamma_for_bits`, wrap-around failure probability
  `failure_probability`); it shrinks as z grows (more noise takes more of the range),
  so calibrating z for a target epsilon re-derives gamma at every z it tries.
- delta defaults to 1e-5, below 1 / num_clients for populations under 100,000 (a
  guarantee with delta above 1 / n would allow publishing one client's data).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, overload

import numpy as np

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.hadamard import padded_size
from fedjax_compress.privacy.calibration import gamma_for_bits
from fedjax_compress.privacy.rounding import DEFAULT_BETA, rounding_norm_bound

MECHANISMS = ("gaussian", "ddg", "skellam")
DEFAULT_DELTA = 1e-5
# Wrap-around: the probability that any coordinate of a round's sum wraps (union bound).
DEFAULT_FAILURE_PROBABILITY = 1e-6
# bits="auto" (or None): the fewest bits whose rounding inflates the sensitivity by at
# most AUTO_SLACK (`auto_bits`).
AUTO_BITS = "auto"
AUTO_SLACK = 0.01


class DpPlan(NamedTuple):
  """A private aggregator's resolved parameters for one run.

  Attributes:
    mechanism: "gaussian" (central), "ddg" or "skellam" (distributed).
    noise_multiplier: z: the summed noise's standard deviation is z * clip_norm.
    clip_norm: C, the L2 norm each client's update is clipped to.
    clients_per_round: n, the clients summed a round.
    delta: the delta of the (epsilon, delta) guarantee.
    num_clients: the population sampled from; None when unknown (no accounting).
    rounds: the run's rounds; None when unknown (no accounting).
    target_epsilon: the epsilon z was calibrated for, or None when z was given.
    bits: b, each coordinate's width in Z_{2^b} (distributed only; "auto" picks it,
      `auto_bits`).
    gamma: the scale before rounding to integers (distributed only).
    dim: the coordinates each client sends: the update's size padded to a power of two
      for the rotation (distributed only).
    beta: conditional rounding's parameter (`rounding.rounding_norm_bound`).
    failure_probability: the allowed probability of a wrap-around a round.
    accountant: "rdp" or "pld" (dp-accounting's).
  """

  mechanism: str
  noise_multiplier: float
  clip_norm: float
  clients_per_round: int
  delta: float = DEFAULT_DELTA
  num_clients: int | None = None
  rounds: int | None = None
  target_epsilon: float | None = None
  bits: int | None = None
  gamma: float | None = None
  dim: int | None = None
  beta: float = DEFAULT_BETA
  failure_probability: float = DEFAULT_FAILURE_PROBABILITY
  accountant: str = "rdp"

  @property
  def distributed(self) -> bool:
    return self.mechanism != "gaussian"

  @property
  def accountable(self) -> bool:
    """Whether the population and the rounds are known, so epsilon can be computed."""
    return self.num_clients is not None and self.rounds is not None

  @property
  def norm_bound(self) -> float | None:
    """The conditional rounding's L2 bound on a client's integer vector (distributed)."""
    if not self.distributed:
      return None
    assert self.gamma is not None and self.dim is not None  # make_plan sets them
    return rounding_norm_bound(self.gamma * self.clip_norm, self.dim, self.beta)

  @property
  def local_noise(self) -> float:
    """Each client's noise parameter: sigma (DDG), mu (Skellam); 0 for "gaussian"."""
    if not self.distributed:
      return 0.0
    assert self.gamma is not None  # make_plan sets it for the distributed mechanisms
    total = self.noise_multiplier * self.clip_norm * self.gamma  # integer units
    n = self.clients_per_round
    return total**2 / (2 * n) if self.mechanism == "skellam" else total / math.sqrt(n)

  def params(self):
    """The `accounting.DpParams` of this plan (needs `accountable`)."""
    from fedjax_compress.privacy import accounting  # pylint: disable=import-outside-toplevel

    if not self.accountable:
      raise ValueError(f"{self.mechanism}: privacy accounting needs num_clients and rounds.")
    assert self.num_clients is not None and self.rounds is not None  # accountable
    return accounting.DpParams(
      self.mechanism,
      self.noise_multiplier,
      self.clients_per_round,
      self.num_clients,
      self.rounds,
      self.clip_norm if self.distributed else None,
      self.gamma,
      self.dim,
      self.beta,
    )

  def epsilons(self) -> np.ndarray:
    """Epsilon at `delta` after each round 1..rounds (`accounting.epsilons_by_round`)."""
    from fedjax_compress.privacy import accounting  # pylint: disable=import-outside-toplevel

    return accounting.epsilons_by_round(self.params(), self.delta, self.accountant)

  def describe(self) -> str:
    """One line for the run's log."""
    noise = f"noise multiplier {self.noise_multiplier:.4g}"
    if self.target_epsilon is not None:
      noise += f" (calibrated for epsilon {self.target_epsilon:g})"
    parts = [
      f"{self.mechanism}",
      noise,
      f"clip {self.clip_norm:g}",
      f"{self.clients_per_round} clients a round",
    ]
    if self.distributed:
      parts += [
        f"{self.bits} bits a coordinate",
        f"gamma {self.gamma:.4g}",
        f"{self.dim} coordinates",
      ]
    return ", ".join(parts) + f", delta {self.delta:g}"


def _gamma_of(
  bits: int, clients: int, clip_norm: float, dim: int, failure_probability: float, owner: str
):
  """z -> the largest gamma that fits `bits` with noise z * clip_norm (a ValueError
  naming `bits` when the bit width cannot hold even the rounding errors)."""

  def gamma(z: float) -> float:
    try:
      return gamma_for_bits(
        bits,
        clients=clients,
        clip_norm=clip_norm,
        dim=dim,
        noise_stddev=z * clip_norm,
        failure_probability=failure_probability,
      )
    except ValueError as e:
      raise ValueError(
        f"{owner}: bits={bits} is too few for {clients} clients a round and "
        f"{dim} coordinates ({e}); raise bits."
      ) from None

  return gamma


def auto_bits(
  noise_multiplier: float,
  *,
  clients: int,
  clip_norm: float,
  dim: int,
  failure_probability: float = DEFAULT_FAILURE_PROBABILITY,
  beta: float = DEFAULT_BETA,
  slack: float = AUTO_SLACK,
) -> int:
  """The fewest bits at which rounding costs the distributed mechanisms almost no privacy.

  The smallest b whose gamma (`calibration.gamma_for_bits` for noise z * C) makes the
  conditional rounding's norm bound at most (1 + slack) times the scaled clip gamma C:
  the sensitivity the noise must cover is then within `slack` of the central Gaussian's,
  and so is the noise for a given epsilon. With a target epsilon, z is the central
  Gaussian's for it (`make_plan` recalibrates z at the chosen width). The bits for a
  given gamma are `calibration.bits_for_modular_sum`; this picks gamma's width.
  """
  for bits in range(2, 33):
    try:
      gamma = gamma_for_bits(
        bits,
        clients=clients,
        clip_norm=clip_norm,
        dim=dim,
        noise_stddev=noise_multiplier * clip_norm,
        failure_probability=failure_probability,
      )
    except ValueError:
      continue  # too few bits for the rounding errors alone
    scaled = gamma * clip_norm
    if rounding_norm_bound(scaled, dim, beta) <= (1 + slack) * scaled:
      return bits
  raise ValueError(
    f"auto bits: no width up to 32 bits keeps the rounding within {slack:.0%} "
    f"of the clip for {clients} clients and {dim} coordinates: give bits."
  )


@overload
def make_plan(
  mechanism: str,
  *,
  size: int,
  clip_norm: float,
  clients_per_round: int,
  noise_multiplier: float | None = ...,
  target_epsilon: float | None = ...,
  delta: float = ...,
  num_clients: int | None = ...,
  rounds: int | None = ...,
  bits: int | None = ...,
  failure_probability: float = ...,
  beta: float = ...,
  accountant: str = ...,
) -> DpPlan: ...
@overload
def make_plan(
  mechanism: str,
  *,
  size: None,
  clip_norm: float,
  clients_per_round: int,
  noise_multiplier: float | None = ...,
  target_epsilon: float | None = ...,
  delta: float = ...,
  num_clients: int | None = ...,
  rounds: int | None = ...,
  bits: int | None = ...,
  failure_probability: float = ...,
  beta: float = ...,
  accountant: str = ...,
) -> None: ...
def make_plan(
  mechanism: str,
  *,
  size: int | None,
  clip_norm: float,
  clients_per_round: int,
  noise_multiplier: float | None = None,
  target_epsilon: float | None = None,
  delta: float = DEFAULT_DELTA,
  num_clients: int | None = None,
  rounds: int | None = None,
  bits: int | None = None,
  failure_probability: float = DEFAULT_FAILURE_PROBABILITY,
  beta: float = DEFAULT_BETA,
  accountant: str = "rdp",
) -> DpPlan | None:
  """Resolves a private aggregator's configuration for a run (module docstring).

  Args:
    mechanism: "gaussian", "ddg" or "skellam".
    size: the number of parameters in a client's update (read by the distributed
      mechanisms only). None checks the arguments and returns None: an aggregator is
      built before it sees a model or the population.
    clip_norm, clients_per_round, delta, num_clients, rounds, bits, failure_probability,
      beta, accountant: as in `DpPlan`.
    noise_multiplier / target_epsilon: exactly one of them. A target needs
      `num_clients` and `rounds`.

  Raises:
    ValueError: naming the argument and the fix.
  """
  owner = mechanism if isinstance(mechanism, str) else "make_plan"
  mechanism = check.choice(owner, "mechanism", mechanism, MECHANISMS)
  clip_norm = check.real(owner, "clip_norm", clip_norm, 0.0, lo_open=True)
  n = check.integer(owner, "clients_per_round", clients_per_round, 1)
  delta = check.real(owner, "delta", delta, 0.0, 1.0, lo_open=True, hi_open=True)
  beta = check.real(owner, "beta", beta, 0.0, 1.0, hi_open=True)
  failure_probability = check.real(
    owner, "failure_probability", failure_probability, 0.0, 1.0, lo_open=True, hi_open=True
  )
  accountant = check.choice(owner, "accountant", accountant, ("rdp", "pld"))
  if num_clients is not None:
    num_clients = check.integer(owner, "num_clients", num_clients, n)
  if rounds is not None:
    rounds = check.integer(owner, "rounds", rounds, 1)
  if (noise_multiplier is None) == (target_epsilon is None):
    raise ValueError(
      f"{owner}: set exactly one of noise_multiplier and target_epsilon "
      f"(got {noise_multiplier!r} and {target_epsilon!r})."
    )
  if target_epsilon is not None:
    target_epsilon = check.real(owner, "target_epsilon", target_epsilon, 0.0, lo_open=True)
  else:
    noise_multiplier = check.real(owner, "noise_multiplier", noise_multiplier, 0.0)
  if mechanism == "gaussian":
    if bits is not None:
      raise ValueError(
        f"{owner}: bits is for the distributed mechanisms (ddg, skellam); "
        f"the central Gaussian sends float32: remove it."
      )
  elif bits is not None and bits != AUTO_BITS:
    from fedjax_compress.privacy.modular import check_modulus_bits  # pylint: disable=import-outside-toplevel

    bits = check_modulus_bits(owner, bits)
  if size is None:
    return None  # The arguments are checked; the rest depends on the run.
  if target_epsilon is not None and (num_clients is None or rounds is None):
    raise ValueError(
      f"{owner}: target_epsilon needs the population and the rounds, "
      f"which a run supplies; give num_clients and rounds."
    )
  base: dict[str, Any] = dict(
    clip_norm=clip_norm,
    clients_per_round=n,
    delta=delta,
    num_clients=num_clients,
    rounds=rounds,
    target_epsilon=target_epsilon,
    beta=beta,
    failure_probability=failure_probability,
    accountant=accountant,
  )
  if mechanism == "gaussian":
    if target_epsilon is not None:
      noise_multiplier = _calibrate("gaussian", target_epsilon, base)
    assert noise_multiplier is not None  # given, or calibrated for target_epsilon
    return DpPlan("gaussian", float(noise_multiplier), **base)
  return _distributed_plan(owner, mechanism, size, noise_multiplier, target_epsilon, bits, base)


def _distributed_plan(
  owner: str,
  mechanism: str,
  size: int,
  noise_multiplier: float | None,
  target_epsilon: float | None,
  bits: int | str | None,
  base: dict[str, Any],
) -> DpPlan:
  """A DDG or Skellam plan: the rotation's size, the modulus' bits ("auto": from the
  central noise), gamma, and the noise multiplier (given, or calibrated)."""
  clip_norm, n = base["clip_norm"], base["clients_per_round"]
  failure_probability, beta = base["failure_probability"], base["beta"]
  size = check.integer(owner, "size", size, 1)
  dim = padded_size(size)
  if bits in (None, AUTO_BITS):
    central_z = (
      noise_multiplier if target_epsilon is None else _calibrate("gaussian", target_epsilon, base)
    )
    assert central_z is not None  # given, or calibrated for target_epsilon
    bits = auto_bits(
      central_z,
      clients=n,
      clip_norm=clip_norm,
      dim=dim,
      failure_probability=failure_probability,
      beta=beta,
    )
  assert isinstance(bits, int)  # checked by make_plan, or chosen above
  gamma_of = _gamma_of(bits, n, clip_norm, dim, failure_probability, owner)
  if target_epsilon is not None:
    try:
      noise_multiplier = _calibrate(mechanism, target_epsilon, {**base, "dim": dim}, gamma=gamma_of)
    except ValueError as e:
      if "reachable" not in str(e):
        raise
      raise ValueError(
        f"{owner}: target_epsilon={target_epsilon:g} is out of reach with bits={bits}: the "
        f"scale that fits {bits} bits leaves rounding errors that inflate the sensitivity "
        f"faster than noise covers it; raise bits (or the target)."
      ) from None
  elif noise_multiplier == 0:
    raise ValueError(
      f"{owner}: noise_multiplier=0 adds no noise: use a float aggregator for "
      f"a non-private baseline, or give noise_multiplier > 0."
    )
  assert noise_multiplier is not None  # given, or calibrated for target_epsilon
  plan = DpPlan(
    mechanism, float(noise_multiplier), **base, bits=bits, gamma=gamma_of(noise_multiplier), dim=dim
  )
  _check_local_noise(owner, plan)
  return plan


def _check_local_noise(owner: str, plan: DpPlan) -> None:
  """Raises `ValueError` if each client's noise parameter is out of the sampler's range
  or, for DDG, below the analysis' 1/2."""
  mechanism, bits = plan.mechanism, plan.bits
  from fedjax_compress.privacy.samplers import MAX_MU, MAX_SIGMA  # pylint: disable=import-outside-toplevel

  limit = MAX_SIGMA if mechanism == "ddg" else MAX_MU
  if plan.local_noise > limit:
    raise ValueError(
      f"{owner}: each client's noise parameter is {plan.local_noise:.4g}, above "
      f"the sampler's {limit:g} (gamma {plan.gamma:.4g} for bits={bits}): lower "
      f"bits (each bit fewer halves gamma)."
    )
  if mechanism == "ddg" and plan.local_noise < 0.5:
    raise ValueError(
      f"{owner}: each client's discrete Gaussian sigma is "
      f"{plan.local_noise:.3g}, below the 1/2 that Kairouz et al.'s analysis "
      f"needs (Proposition 14): raise noise_multiplier or bits."
    )


def _calibrate(mechanism: str, target_epsilon: float, base: dict, gamma=None) -> float:
  from fedjax_compress.privacy import accounting  # pylint: disable=import-outside-toplevel

  return accounting.noise_multiplier_for_epsilon(
    target_epsilon,
    base["delta"],
    clients_per_round=base["clients_per_round"],
    num_clients=base["num_clients"],
    rounds=base["rounds"],
    mechanism=mechanism,
    accountant=base["accountant"],
    clip_norm=base["clip_norm"] if gamma else None,
    gamma=gamma,
    dim=base.get("dim"),
    beta=base["beta"],
  )
