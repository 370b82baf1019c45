"""Sums and means of client updates, sent through encoding stages.

`encoded_sum` encodes each client's update leaf by leaf on the client, and decodes on
the server. Where a leading run of a leaf's stages commutes with summation, the server
decodes the rest per client, sums, and decodes that run once (TFF's "sum before
decode"); `sum_before_decode=False` decodes every client fully, for comparison.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_compress.aggregators import arguments as check
from fedjax_compress.aggregators.core import (UPLINK_BITS, Aggregator, Stream, measured_bits,
                                              payload_bits, set_clients, sum_over_clients,
                                              with_bits, wrap, zero_bits)
from fedjax_compress.aggregators.stages import (SharedKeys, Spec, Stage, chain, check_takes_float,
                                                decode_parts, identity, input_specs)

Policy = Callable[[tuple, Spec], Stage | None]


def check_threshold(owner: str, threshold) -> int:
  """`threshold` as an int >= 0 (a leaf count of elements); else a ValueError naming `owner`."""
  return check.integer(owner, "threshold", threshold, 0)


def stage_policy(owner: str, stage: Stage | Policy, threshold) -> Policy:
  """The policy of an aggregator's `stage` argument: a `Stage` (checked to take float
  values) for leaves above `threshold` elements, or a policy as it is."""
  threshold = check_threshold(owner, threshold)
  if not isinstance(stage, Stage):
    if not callable(stage):
      raise ValueError(f"{owner}: stage={stage!r} is invalid: it must be a Stage or a policy "
                       f"(path, spec) -> Stage | None.")
    return stage
  check_takes_float(stage, owner)
  return above_threshold(stage, threshold)


def above_threshold(stage: Stage, threshold: int) -> Policy:
  """Encodes leaves with more than `threshold` elements; the rest travel as float32."""
  return lambda path, spec: stage if spec.size > threshold else None


class LeafCodec(NamedTuple):
  """How one leaf of the update travels: its stage, spec and the run that commutes."""
  stage: Stage
  spec: Spec
  commuting: int  # the leading parts of `stage.parts` summed before decoding


def leaf_codecs(policy: Policy, spec_tree, *, sum_before_decode: bool = True):
  """A `LeafCodec` per leaf of `spec_tree` (one client's update), and the treedef."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(spec_tree)
  codecs = []
  for path, spec in flat:
    spec = Spec(spec.shape, spec.dtype)
    stage = chain(policy(path, spec) or identity())
    if jnp.issubdtype(spec.dtype, jnp.floating):
      check_takes_float(stage, "encoding", f"leaf {jax.tree_util.keystr(path)} of the update")
    commuting = 0
    while sum_before_decode and commuting < len(stage.parts) and (
        stage.parts[commuting].commutes_with_sum):
      commuting += 1
    codecs.append(LeafCodec(stage, spec, commuting))
  return codecs, treedef


def common_key(key: jax.Array, leaf: int) -> jax.Array:
  """The round's key of leaf `leaf` that every client and the server share."""
  return jax.random.fold_in(jax.random.fold_in(key, 1), leaf)


def client_keys(key: jax.Array, leaf: int, index: jax.Array):
  """Per-client private keys and shared keys of leaf `leaf`, for cohort positions `index`.

  The private key never leaves its client; the shared keys are the round's `common` one
  (for commuting stages) and one per client, both reproducible by the server.
  """
  private = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(
      jax.random.fold_in(key, 0), i), leaf))(index)
  common = common_key(key, leaf)
  return private, SharedKeys(common, jax.vmap(lambda i: jax.random.fold_in(common, i))(index))


def _without_streams(side):
  """`side` without its entropy-coded streams (None in their place): `update` reads
  statistics, and a cohort's streams would hold every client's codes until the round ends."""
  is_stream = lambda s: isinstance(s, Stream)
  return jax.tree.map(lambda s: None if is_stream(s) else s, side, is_leaf=is_stream)


def encode_clients(codec: LeafCodec, state, x, private, shared: SharedKeys):
  """Each client's encoding of its leaf `x` [chunk, ...] (vmapped)."""
  return jax.vmap(codec.stage.encode, (None, 0, 0, SharedKeys(None, 0)))(state, x, private,
                                                                          shared)


def decode_clients(codec: LeafCodec, state, enc, shared: SharedKeys, lo: int = 0):
  """Decodes each client's encoding down to part `lo` (0: fully), vmapped."""
  parts = codec.stage.parts
  specs = input_specs(parts, state, codec.spec)
  return jax.vmap(lambda values, sides, client: decode_parts(
      parts, state, values, sides, specs, SharedKeys(shared.common, client), len(parts),
      lo))(enc.values, enc.side, shared.client)


def encoded_sum(stage: Stage | Policy, *, threshold: int = 0,
                sum_before_decode: bool = True) -> Aggregator:
  """Sum of client updates, each leaf sent through a stage.

  Args:
    stage: a `Stage` for every leaf with more than `threshold` elements, or a policy
      `(path, spec) -> Stage | None` (None: the leaf is sent as it is).
    threshold: see `stage`; ignored for a policy.
    sum_before_decode: sum encoded values before decoding the commuting stages.

  A stage with an `update` (an adaptive stage) changes its state every round; the new
  state reaches every client before the next round and counts as downlink bits.
  """
  policy = stage_policy("encoded_sum", stage, threshold)
  sum_before_decode = check.boolean("encoded_sum", "sum_before_decode", sum_before_decode)
  codecs_of = lambda spec: leaf_codecs(policy, spec, sum_before_decode=sum_before_decode)

  def init(template):
    codecs, _ = codecs_of(jax.tree.map(lambda x: Spec(x.shape, x.dtype), template))
    return tuple(c.stage.init(c.spec) for c in codecs)

  def start(state, spec, num_clients):
    codecs, _ = codecs_of(spec)
    key = jax.random.key(0)  # shapes only
    leaves, bound = [], 0
    for codec, leaf_state in zip(codecs, state):
      parts = codec.stage.parts
      enc = jax.eval_shape(lambda x: codec.stage.encode(leaf_state, x, key, key), codec.spec)
      bound += payload_bits(enc)
      summed = jax.eval_shape(
          lambda e: decode_parts(parts, leaf_state, e.values, e.side,
                                 input_specs(parts, leaf_state, codec.spec),
                                 SharedKeys(key, key), len(parts), codec.commuting), enc)
      every_side = jax.tree.map(lambda a: Spec((num_clients,) + a.shape, a.dtype),
                                _without_streams(enc.side))
      leaves.append({"sum": _zeros(summed), "commuting_sides": _zeros(enc.side[:codec.commuting]),
                     "sides": _zeros(every_side) if codec.stage.update else ()})
    if bound >= 2**31:
      raise ValueError(f"A client payload of up to {bound} bits exceeds the int32 bit counter.")
    return {"leaves": tuple(leaves), "bits": zero_bits(num_clients)}

  def accumulate(state, partial, updates, weights, clients, key):
    one_client = jax.tree.map(lambda x: Spec(x.shape[1:], x.dtype), updates)
    codecs, treedef = codecs_of(one_client)
    bits = jnp.zeros(weights.shape, jnp.int32)
    leaves = []
    for i, (codec, leaf_state, x, acc) in enumerate(
        zip(codecs, state, treedef.flatten_up_to(updates), partial["leaves"])):
      private, shared = client_keys(key, i, clients.index)
      enc = encode_clients(codec, leaf_state, x, private, shared)
      # Exact per client, entropy-coded streams at their measured length.
      bits = bits + jax.vmap(measured_bits)(enc)
      summed = sum_over_clients(decode_clients(codec, leaf_state, enc, shared, codec.commuting))
      leaves.append({
          "sum": acc["sum"] + summed,
          # Commuting sides do not depend on the data: every client's are the same.
          "commuting_sides": jax.tree.map(lambda a: a[0], enc.side[:codec.commuting]),
          "sides": (jax.tree.map(lambda all_, a: set_clients(all_, clients.index, a),
                                 acc["sides"], _without_streams(enc.side))
                    if codec.stage.update else ()),
      })
    uplink = set_clients(partial["bits"][UPLINK_BITS], clients.index, bits)
    return {"leaves": tuple(leaves), "bits": {**partial["bits"], UPLINK_BITS: uplink}}, ()

  def finish(state, partial, spec, key):
    codecs, treedef = codecs_of(spec)
    totals, new_state, downlink = [], [], 0
    for i, (codec, leaf_state, acc) in enumerate(zip(codecs, state, partial["leaves"])):
      common = common_key(key, i)
      parts = codec.stage.parts
      totals.append(decode_parts(parts, leaf_state, acc["sum"], acc["commuting_sides"],
                                 input_specs(parts, leaf_state, codec.spec),
                                 SharedKeys(common, common), codec.commuting, 0))
      if codec.stage.update:
        new_state.append(codec.stage.update(leaf_state, acc["sides"]))
        downlink += payload_bits(leaf_state)
      else:
        new_state.append(leaf_state)
    num_clients = partial["bits"][UPLINK_BITS].shape[0]
    measurements = with_bits(partial["bits"], num_clients, downlink_aux_bits=downlink)
    return treedef.unflatten(totals), tuple(new_state), measurements

  return Aggregator(init, start, accumulate, finish)


def mean(sum_aggregator: Aggregator | None = None, *, weighted: bool = True) -> Aggregator:
  """Mean of client updates through a sum aggregator (float32 by default).

  Weighted: each client multiplies its update by its weight before it is summed and
  sends the weight too (one float32); the server divides by the sum of the weights.
  Unweighted: the server divides by the number of clients.
  """
  weighted = check.boolean("mean", "weighted", weighted)
  inner = sum_aggregator or encoded_sum(identity())

  def start(state, spec, num_clients):
    return {"inner": inner.start(state, spec, num_clients),
            "weight": jnp.zeros((), jnp.float32), "clients": jnp.zeros((), jnp.float32)}

  def accumulate(state, partial, updates, weights, clients, key):
    weights = weights.astype(jnp.float32)
    if weighted:
      updates = jax.tree.map(lambda x: x * _expand(weights, x), updates)
    inner_partial, client_states = inner.accumulate(state, partial["inner"], updates, weights,
                                                    clients, key)
    return {"inner": inner_partial, "weight": partial["weight"] + jnp.sum(weights),
            "clients": partial["clients"] + weights.shape[0]}, client_states

  def finish(state, partial, spec, key):
    total, state, measurements = inner.finish(state, partial["inner"], spec, key)
    total_weight = partial["weight"] if weighted else partial["clients"]
    safe = jnp.where(total_weight > 0, total_weight, 1.0)
    aggregate = jax.tree.map(lambda t: t / safe, total)
    if weighted:
      num_clients = measurements[UPLINK_BITS].shape[0]
      measurements = with_bits(measurements, num_clients, uplink_aux_bits=32)
    return aggregate, state, measurements

  return wrap(inner, start=start, accumulate=accumulate, finish=finish)


def sum(stage: Stage | None = None) -> Aggregator:  # pylint: disable=redefined-builtin
  """Unweighted sum of client updates (float32 unless a stage is given)."""
  return encoded_sum(stage or identity())


def encoded_mean(stage: Stage | Policy, *, threshold: int = 0, weighted: bool = True,
                 sum_before_decode: bool = True) -> Aggregator:
  """`mean` of `encoded_sum(stage, threshold=...)`: the usual compressed aggregator."""
  stage_policy("encoded_mean", stage, threshold)  # names encoded_mean in its errors
  return mean(encoded_sum(stage, threshold=threshold, sum_before_decode=sum_before_decode),
              weighted=weighted)


def _expand(weights, x):
  return weights.reshape(weights.shape + (1,) * (x.ndim - 1))


def _zeros(spec_tree):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), spec_tree)
