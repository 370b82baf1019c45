"""Distributed DP under secure aggregation: the DDG and Skellam aggregators.

Each client of a round, on its own device:
1. clips its whole update (all leaves as one vector) to L2 norm C;
2. rotates it with the randomized Hadamard transform (the `hadamard` stage; the signs
   come from the round's shared key, the same for every client), padding it to d, a
   power of two: a flat vector spreads a large coordinate over all d, so no coordinate
   is much larger than C / sqrt(d) and the bit width can be small;
3. scales it by gamma and rounds it to integers by conditional randomized rounding, so
   that the integer vector's norm is within the bound the noise is calibrated to
   (`rounding.conditional_randomized_round`, Kairouz, Liu, Steinke, ICML 2021);
4. adds its noise share: a discrete Gaussian of sigma (DDG, Kairouz et al.) or a
   Skellam of mu (Agarwal, Kairouz, Liu, NeurIPS 2021), sized so that the n shares sum
   to noise of standard deviation z C gamma;
5. sends the result as elements of Z_{2^b} (`modular.wrap`: modular clipping).
Secure aggregation sums them modulo 2^b (`modular.modular_sum`); the server reads the
sum in the centered range, divides by gamma, rotates back, and divides by the expected
cohort n: the mean is unweighted, as DP requires (a client's weight would be its
influence).

What is private, and against whom: the server sees only the noisy sum, so each round is
(epsilon, delta)-DP toward it and toward anyone who sees the model, provided secure
aggregation hides the individual vectors and the clients are honest about their noise.
A client that drops out after the masks are fixed leaves its noise share out of the sum
(less noise than accounted); that, the protocol's own costs and collusion are not
modelled (docs/privacy.md).

Bits: b per coordinate of the padded vector, d b per client under `uplink_bits`: the
masked vector secure aggregation carries. Nothing else is sent (the clip, gamma and b
are fixed before the run; no weights).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_compress.aggregators.base import Aggregator, Clients, set_clients, with_bits
from fedjax_compress.compression.base import Encoded
from fedjax_compress.compression.hadamard import hadamard
from fedjax_compress.privacy.modular import modular_sum
from fedjax_compress.privacy.plan import (
  DEFAULT_DELTA,
  DEFAULT_FAILURE_PROBABILITY,
  DpPlan,
  make_plan,
)
from fedjax_compress.privacy.rounding import DEFAULT_BETA, conditional_randomized_round
from fedjax_compress.privacy.samplers import discrete_gaussian, skellam

# The round key's streams: each client's private randomness (rounding, noise) and the
# rotation's shared signs.
from fedjax_compress.streams import PRIVATE_STREAM, SHARED_STREAM

_ROTATION = hadamard()  # the whole vector, padded to a power of two: d = padded_size(size)


class DistributedPartial(NamedTuple):
  """A round's partial result.

  Attributes:
    sums: `modular_sum`'s partial result: the Z_{2^b} sum of the clients so far.
    norms: float32 [num_clients], each client's update norm before clipping.
    rejected: bool [num_clients], clients whose conditional rounding found no vector
      within the bound in its tries (they sent zeros plus their noise).
  """

  sums: object
  norms: jax.Array
  rejected: jax.Array


def flat_size(template) -> int:
  """The number of parameters in an update pytree (arrays or ShapeDtypeStructs)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(template))


def _flatten(updates) -> jax.Array:
  """[clients, size] float32: each client's update leaves concatenated."""
  leaves = jax.tree.leaves(updates)
  return jnp.concatenate([x.reshape(x.shape[0], -1).astype(jnp.float32) for x in leaves], axis=1)


def _unflatten(flat: jax.Array, spec):
  leaves, treedef = jax.tree.flatten(spec)
  out, start = [], 0
  for leaf in leaves:
    size = math.prod(leaf.shape)
    out.append(flat[start : start + size].reshape(leaf.shape).astype(leaf.dtype))
    start += size
  return treedef.unflatten(out)  # type: ignore[attr-defined]  # jaxlib has no PyTreeDef stub


def _noise(plan: DpPlan, key: jax.Array) -> jax.Array:
  """One client's integer noise share over the d coordinates."""
  assert plan.dim is not None  # a distributed plan's
  if plan.mechanism == "ddg":
    return discrete_gaussian(key, plan.local_noise, (plan.dim,))
  return skellam(key, plan.local_noise, (plan.dim,))


def client_integers(
  plan: DpPlan, update: jax.Array, key: jax.Array, shared_key: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Steps 1-4 for one client's flat update: (int32 [dim] to wrap, norm, rejected).

  A client whose update has a NaN or Inf sends zeros plus its noise (its own check: the
  server learns nothing of it), as TFF's zeroing would.
  """
  update = jnp.where(jnp.all(jnp.isfinite(update)), update, 0.0)
  norm = jnp.sqrt(jnp.sum(jnp.square(update)))
  clipped = update * jnp.minimum(1.0, plan.clip_norm / jnp.maximum(norm, 1e-30))
  # The rotation draws only shared randomness: its private key is unused.
  rotated = _ROTATION.encode((), clipped, shared_key, shared_key).values
  k_round, k_noise = jax.random.split(key)
  assert plan.gamma is not None  # a distributed plan's
  rounded = conditional_randomized_round(k_round, plan.gamma * rotated, plan.norm_bound)
  return rounded.values + _noise(plan, k_noise), norm, ~rounded.accepted


def server_mean(plan: DpPlan, total: jax.Array, size: int, shared_key: jax.Array) -> jax.Array:
  """The server's decode of the integer sum: / gamma, rotate back, / n (flat [size])."""
  spec = jax.ShapeDtypeStruct((size,), jnp.float32)
  assert plan.gamma is not None  # a distributed plan's
  scaled = total.astype(jnp.float32) / plan.gamma
  return _ROTATION.decode((), Encoded(scaled), spec, shared_key) / plan.clients_per_round


def distributed_dp(
  mechanism: str,
  *,
  clip_norm: float,
  bits: int | str,
  clients_per_round: int,
  noise_multiplier: float | None = None,
  target_epsilon: float | None = None,
  delta: float = DEFAULT_DELTA,
  num_clients: int | None = None,
  rounds: int | None = None,
  failure_probability: float = DEFAULT_FAILURE_PROBABILITY,
  beta: float = DEFAULT_BETA,
  accountant: str = "rdp",
) -> Aggregator:
  """The DDG ("ddg") or Skellam ("skellam") mean of client updates (module docstring).

  The arguments are `plan.make_plan`'s (`bits="auto"` picks the width, `plan.auto_bits`); the plan is resolved from the update's size when
  the aggregator first sees it (`init`), and `aggregator.privacy(template)` returns it.
  Every argument is checked now, so mistakes stop a run before any work; what depends
  on the size (gamma, a calibrated noise multiplier) is checked when it is resolved.
  """
  arguments: dict[str, Any] = dict(
    clip_norm=clip_norm,
    clients_per_round=clients_per_round,
    noise_multiplier=noise_multiplier,
    target_epsilon=target_epsilon,
    delta=delta,
    num_clients=num_clients,
    rounds=rounds,
    bits=bits,
    failure_probability=failure_probability,
    beta=beta,
    accountant=accountant,
  )
  if mechanism not in ("ddg", "skellam"):
    raise ValueError(f"distributed_dp: mechanism={mechanism!r} is invalid: use 'ddg' or 'skellam'.")
  make_plan(mechanism, size=None, **arguments)  # checks the arguments

  @functools.cache
  def plan_for(size: int) -> DpPlan:
    return make_plan(mechanism, size=size, **arguments)

  def privacy(template) -> DpPlan:
    return plan_for(flat_size(template))

  def init(template):
    privacy(template)
    return ()

  def start(state, spec, num_clients):
    plan = privacy(spec)
    assert plan.bits is not None  # a distributed plan's
    ints = jax.ShapeDtypeStruct((plan.dim,), jnp.int32)
    return DistributedPartial(
      modular_sum(plan.bits).start((), ints, num_clients),
      jnp.zeros((num_clients,), jnp.float32),
      jnp.zeros((num_clients,), bool),
    )

  def accumulate(state, partial, updates, weights, clients: Clients, key):
    plan = privacy(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), updates))
    shared = jax.random.fold_in(key, SHARED_STREAM)
    private = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, PRIVATE_STREAM), i))(
      clients.index
    )
    ints, norms, rejected = jax.vmap(lambda u, k: client_integers(plan, u, k, shared))(
      _flatten(updates), private
    )
    assert plan.bits is not None  # a distributed plan's
    sums, _ = modular_sum(plan.bits).accumulate((), partial.sums, ints, weights, clients, key)
    return DistributedPartial(
      sums,
      set_clients(partial.norms, clients.index, norms),
      set_clients(partial.rejected, clients.index, rejected),
    ), ()

  def finish(state, partial, spec, key):
    plan = privacy(spec)
    assert plan.bits is not None  # a distributed plan's
    ints = jax.ShapeDtypeStruct((plan.dim,), jnp.int32)
    total, _, bits_ = modular_sum(plan.bits).finish((), partial.sums, ints, key)
    shared = jax.random.fold_in(key, SHARED_STREAM)
    mean = _unflatten(server_mean(plan, total, flat_size(spec), shared), spec)
    measurements = {
      **bits_,
      "privacy/num_clipped": jnp.sum(partial.norms > plan.clip_norm).astype(jnp.float32),
      "privacy/num_rounding_rejected": jnp.sum(partial.rejected).astype(jnp.float32),
    }
    return mean, state, with_bits(measurements, partial.norms.shape[0])

  return Aggregator(init, start, accumulate, finish, privacy=privacy)
