"""Sums and means of client updates, sent through encoding stages.

`encoded_sum` encodes each client's update leaf by leaf on the client, and decodes on
the server. Where a leading run of a leaf's stages commutes with summation, the server
decodes the rest per client, sums, and decodes that run once (TFF's "sum before
decode"); `sum_before_decode=False` decodes every client fully, for comparison.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from fedjax_compress.aggregators.core import (Aggregator, bit_measurements, measured_bits,
                                              payload_bits, sum_over_clients, with_bits)
from fedjax_compress.aggregators.stages import (SharedKeys, Spec, Stage, chain, decode_parts,
                                                identity, input_specs)

Policy = Callable[[tuple, Spec], Stage | None]


def above_threshold(stage: Stage, threshold: int) -> Policy:
  """Encodes leaves with more than `threshold` elements; the rest travel as float32."""
  return lambda path, spec: stage if spec.size > threshold else None


def encoded_sum(stage: Stage | Policy, *, threshold: int = 0,
                sum_before_decode: bool = True) -> Aggregator:
  """Sum of client updates, each leaf sent through a stage.

  Args:
    stage: a `Stage` for every leaf with more than `threshold` elements, or a policy
      `(path, spec) -> Stage | None` (None: the leaf is sent as it is).
    threshold: see `stage`; ignored for a policy.
    sum_before_decode: sum encoded values before decoding the commuting stages.
  """
  policy = stage if not isinstance(stage, Stage) else above_threshold(stage, threshold)

  def leaf_stages(template):
    specs = jax.tree.map(lambda x: Spec(x.shape, x.dtype), template)
    flat, treedef = jax.tree_util.tree_flatten_with_path(specs)
    stages = [chain(policy(path, spec) or identity()) for path, spec in flat]
    return stages, [spec for _, spec in flat], treedef

  def init(template):
    stages, specs, _ = leaf_stages(template)
    return tuple(s.init(spec) for s, spec in zip(stages, specs))

  def apply(state, updates, weights, key):
    one_client = jax.tree.map(lambda x: Spec(x.shape[1:], x.dtype), updates)
    stages, specs, treedef = leaf_stages(one_client)
    num_clients = weights.shape[0]
    client_keys = jax.random.split(jax.random.fold_in(key, 0), num_clients)
    shared_root = jax.random.fold_in(key, 1)
    totals, new_state, bits, bound = [], [], jnp.zeros((num_clients,), jnp.int32), 0
    for i, (leaf, stage, leaf_state, spec) in enumerate(
        zip(treedef.flatten_up_to(updates), stages, state, specs)):
      keys = jax.vmap(jax.random.fold_in, (0, None))(client_keys, i)
      common = jax.random.fold_in(shared_root, i)
      shared = SharedKeys(common, jax.vmap(jax.random.fold_in, (None, 0))(
          common, jnp.arange(num_clients)))
      enc = jax.vmap(stage.encode, (None, 0, 0, SharedKeys(None, 0)))(leaf_state, leaf, keys,
                                                                      shared)
      # Exact per client, entropy-coded streams at their measured length.
      bits = bits + jax.vmap(measured_bits)(enc)
      bound += payload_bits(jax.tree.map(lambda a: Spec(a.shape[1:], a.dtype), enc))
      totals.append(_sum_decoded(stage, leaf_state, enc, spec, shared,
                                 sum_before_decode=sum_before_decode))
      new_state.append(stage.update(leaf_state, enc.side) if stage.update else leaf_state)
    if bound >= 2**31:
      raise ValueError(f"A client payload of up to {bound} bits exceeds the int32 bit counter.")
    measurements = bit_measurements(num_clients, uplink_bits=bits)
    return treedef.unflatten(totals), tuple(new_state), measurements

  return Aggregator(init, apply)


def _sum_decoded(stage, states, enc, spec, shared: SharedKeys, *, sum_before_decode):
  parts = stage.parts
  specs = input_specs(parts, states, spec)
  commuting = 0
  while sum_before_decode and commuting < len(parts) and parts[commuting].commutes_with_sum:
    commuting += 1
  per_client = jax.vmap(
      lambda values, sides, client: decode_parts(parts, states, values, sides, specs,
                                                 SharedKeys(shared.common, client), len(parts),
                                                 commuting))(enc.values, enc.side, shared.client)
  summed = sum_over_clients(per_client)
  # Side information of commuting stages is the same for every client: take the first.
  sides = tuple(jax.tree.map(lambda a: a[0], s) for s in enc.side[:commuting])
  # Commuting stages use only the common key.
  once = SharedKeys(shared.common, shared.common)
  return decode_parts(parts, states, summed, sides, specs, once, commuting, 0)


def mean(sum_aggregator: Aggregator | None = None, *, weighted: bool = True) -> Aggregator:
  """Mean of client updates through a sum aggregator (float32 by default).

  Weighted: each client multiplies its update by its weight before it is summed and
  sends the weight too (one float32); the server divides by the sum of the weights.
  Unweighted: the server divides by the number of clients.
  """
  inner = sum_aggregator or encoded_sum(identity())

  def apply(state, updates, weights, key):
    weights = weights.astype(jnp.float32)
    if weighted:
      updates = jax.tree.map(lambda x: x * _expand(weights, x), updates)
      total_weight = jnp.sum(weights)
    else:
      total_weight = jnp.asarray(weights.shape[0], jnp.float32)
    total, state, measurements = inner.apply(state, updates, weights, key)
    safe = jnp.where(total_weight > 0, total_weight, 1.0)
    aggregate = jax.tree.map(lambda t: t / safe, total)
    if weighted:
      measurements = with_bits(measurements, weights.shape[0], uplink_aux_bits=32)
    return aggregate, state, measurements

  return Aggregator(inner.init, apply)


def sum(stage: Stage | None = None) -> Aggregator:  # pylint: disable=redefined-builtin
  """Unweighted sum of client updates (float32 unless a stage is given)."""
  return encoded_sum(stage or identity())


def encoded_mean(stage: Stage | Policy, *, threshold: int = 0, weighted: bool = True,
                 sum_before_decode: bool = True) -> Aggregator:
  """`mean` of `encoded_sum(stage, threshold=...)`: the usual compressed aggregator."""
  return mean(encoded_sum(stage, threshold=threshold, sum_before_decode=sum_before_decode),
              weighted=weighted)


def _expand(weights, x):
  return weights.reshape(weights.shape + (1,) * (x.ndim - 1))
