"""Sums and means of client updates, sent through encoding stages.

`encoded_sum` encodes each client's update leaf by leaf on the client, and decodes on
the server. Where a leading run of a leaf's stages commutes with summation, the server
decodes the rest per client, sums, and decodes that run once (TFF's "sum before
decode"); `sum_before_decode=False` decodes every client fully, for comparison.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_compress.aggregators.base import (
  UPLINK_BITS,
  Aggregator,
  Measurements,
  Partial,
  set_clients,
  sum_over_clients,
  with_bits,
  wrap,
  zero_bits,
)
from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.base import (
  Encoded,
  SharedKey,
  SharedKeys,
  Spec,
  Stage,
  StageState,
  check_takes_float,
  identity,
)
from fedjax_compress.compression.bits import Stream, measured_bits, payload_bits
from fedjax_compress.compression.chain import chain, decode_parts, input_specs
from fedjax_compress.compression.flat import nonzero
from fedjax_compress.streams import PRIVATE_STREAM, SHARED_STREAM

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
      raise ValueError(
        f"{owner}: stage={stage!r} is invalid: it must be a Stage or a policy "
        f"(path, spec) -> Stage | None."
      )
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
    while (
      sum_before_decode
      and commuting < len(stage.parts)
      and (stage.parts[commuting].commutes_with_sum)
    ):
      commuting += 1
    codecs.append(LeafCodec(stage, spec, commuting))
  return codecs, treedef


def common_key(key: jax.Array, leaf: int) -> jax.Array:
  """The round's key of leaf `leaf` that every client and the server share."""
  return jax.random.fold_in(jax.random.fold_in(key, SHARED_STREAM), leaf)


def client_keys(key: jax.Array, leaf: int, index: jax.Array) -> tuple[jax.Array, SharedKeys]:
  """Per-client private keys and shared keys of leaf `leaf`, for cohort positions `index`.

  The private key never leaves its client; the shared keys are the round's `common` one
  (for commuting stages) and one per client, both reproducible by the server.
  """
  private = jax.vmap(
    lambda i: jax.random.fold_in(
      jax.random.fold_in(jax.random.fold_in(key, PRIVATE_STREAM), i), leaf
    )
  )(index)
  common = common_key(key, leaf)
  return private, SharedKeys(common, jax.vmap(lambda i: jax.random.fold_in(common, i))(index))


def _without_streams(side):
  """`side` without its entropy-coded streams (None in their place): `update` reads
  statistics, and a cohort's streams would hold every client's codes until the round ends."""
  is_stream = lambda s: isinstance(s, Stream)
  return jax.tree.map(lambda s: None if is_stream(s) else s, side, is_leaf=is_stream)


def encode_leaf(
  codec: LeafCodec, state: StageState, x: jax.Array, key: jax.Array, shared_key: SharedKey
) -> tuple[Encoded, jax.Array]:
  """One sender's encoding of its leaf `x`, and its exact bits (int32; entropy-coded
  streams at their measured length)."""
  enc = codec.stage.encode(state, x, key, shared_key)
  return enc, measured_bits(enc)


def decode_leaf(
  codec: LeafCodec, state: StageState, enc: Encoded, shared_key: SharedKey, lo: int = 0
) -> jax.Array:
  """Decodes one sender's encoding of its leaf through the parts of its chain down to
  part `lo` (0: fully; `codec.commuting`: all but the run decoded once, after the sum)."""
  parts = codec.stage.parts
  return decode_parts(
    parts,
    state,
    enc.values,
    enc.side,
    input_specs(parts, state, codec.spec),
    shared_key,
    len(parts),
    lo,
  )


def encode_clients(
  codec: LeafCodec, state: StageState, x: jax.Array, private: jax.Array, shared: SharedKeys
) -> tuple[Encoded, jax.Array]:
  """`encode_leaf` of each client's leaf `x` [chunk, ...] (vmapped): the encodings and
  int32 bits [chunk]."""
  return jax.vmap(
    lambda x, key, client: encode_leaf(codec, state, x, key, SharedKeys(shared.common, client))
  )(x, private, shared.client)


def decode_clients(
  codec: LeafCodec, state: StageState, enc: Encoded, shared: SharedKeys, lo: int = 0
) -> jax.Array:
  """`decode_leaf` of each client's encoding (vmapped), down to part `lo`."""
  return jax.vmap(
    lambda enc, client: decode_leaf(codec, state, enc, SharedKeys(shared.common, client), lo)
  )(enc, shared.client)


class ClientMessages(NamedTuple):
  """A chunk of clients' messages of one leaf, as `send_clients` returns them."""

  encoded: Encoded  # each client's encoding [chunk, ...]
  bits: jax.Array  # int32 [chunk]: each client's exact bits
  decoded: jax.Array  # [chunk, ...]: each client's leaf decoded down to part `lo`


def send_clients(
  codec: LeafCodec,
  state: StageState,
  x: jax.Array,
  key: jax.Array,
  leaf: int,
  index: jax.Array,
  lo: int = 0,
) -> ClientMessages:
  """Each client's leaf `x` [chunk, ...] (leaf number `leaf` of the update) encoded with
  the keys of cohort positions `index` (`client_keys`), counted, and decoded down to
  part `lo` as the server does."""
  private, shared = client_keys(key, leaf, index)
  enc, bits = encode_clients(codec, state, x, private, shared)
  return ClientMessages(enc, bits, decode_clients(codec, state, enc, shared, lo))


class LeafPartial(NamedTuple):
  """One leaf's part of `encoded_sum`'s partial result."""

  sum: jax.Array  # the clients' values summed, decoded down to the commuting run
  commuting_sides: Any  # the commuting run's side information (the same for every client)
  sides: Any  # every client's side information, streams left out, for the stage's
  # `update` ([num_clients, ...]); () for a stage without `update`


class EncodedSumPartial(NamedTuple):
  """`encoded_sum`'s partial result: a `LeafPartial` per leaf, and the bit counters."""

  leaves: tuple[LeafPartial, ...]
  bits: Measurements


def encoded_sum(
  stage: Stage | Policy, *, threshold: int = 0, sum_before_decode: bool = True
) -> Aggregator:
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
      enc = jax.eval_shape(lambda x: codec.stage.encode(leaf_state, x, key, key), codec.spec)
      bound += payload_bits(enc)
      summed = jax.eval_shape(
        lambda e: decode_leaf(codec, leaf_state, e, SharedKeys(key, key), codec.commuting), enc
      )
      every_side = jax.tree.map(
        lambda a: Spec((num_clients,) + a.shape, a.dtype), _without_streams(enc.side)
      )
      leaves.append(
        LeafPartial(
          _zeros(summed),
          _zeros(enc.side[: codec.commuting]),
          _zeros(every_side) if codec.stage.update else (),
        )
      )
    if bound >= 2**31:
      raise ValueError(f"A client payload of up to {bound} bits exceeds the int32 bit counter.")
    return EncodedSumPartial(tuple(leaves), zero_bits(num_clients))

  def accumulate(state, partial, updates, weights, clients, key):
    one_client = jax.tree.map(lambda x: Spec(x.shape[1:], x.dtype), updates)
    codecs, treedef = codecs_of(one_client)
    bits = jnp.zeros(weights.shape, jnp.int32)
    leaves = []
    for i, (codec, leaf_state, x, acc) in enumerate(
      zip(codecs, state, treedef.flatten_up_to(updates), partial.leaves)
    ):
      sent = send_clients(codec, leaf_state, x, key, i, clients.index, codec.commuting)
      bits = bits + sent.bits
      side = sent.encoded.side
      leaves.append(
        LeafPartial(
          acc.sum + sum_over_clients(sent.decoded),
          # Commuting sides do not depend on the data: every client's are the same.
          jax.tree.map(lambda a: a[0], side[: codec.commuting]),
          (
            jax.tree.map(
              lambda all_, a: set_clients(all_, clients.index, a), acc.sides, _without_streams(side)
            )
            if codec.stage.update
            else ()
          ),
        )
      )
    uplink = set_clients(partial.bits[UPLINK_BITS], clients.index, bits)
    return EncodedSumPartial(tuple(leaves), {**partial.bits, UPLINK_BITS: uplink}), ()

  def finish(state, partial, spec, key):
    codecs, treedef = codecs_of(spec)
    totals, new_state, downlink = [], [], 0
    for i, (codec, leaf_state, acc) in enumerate(zip(codecs, state, partial.leaves)):
      common = common_key(key, i)
      parts = codec.stage.parts
      totals.append(
        decode_parts(
          parts,
          leaf_state,
          acc.sum,
          acc.commuting_sides,
          input_specs(parts, leaf_state, codec.spec),
          SharedKeys(common, common),
          codec.commuting,
          0,
        )
      )
      if codec.stage.update:
        new_state.append(codec.stage.update(leaf_state, acc.sides))
        downlink += payload_bits(leaf_state)
      else:
        new_state.append(leaf_state)
    num_clients = partial.bits[UPLINK_BITS].shape[0]
    measurements = with_bits(partial.bits, num_clients, downlink_aux_bits=downlink)
    return treedef.unflatten(totals), tuple(new_state), measurements

  return Aggregator(init, start, accumulate, finish)


class MeanPartial(NamedTuple):
  """`float32_mean`'s partial result: the sum aggregator's, and what the sum is divided by."""

  inner: Partial  # the sum aggregator's partial result
  weight: jax.Array  # float32: the sum of the clients' weights
  clients: jax.Array  # float32: the number of clients


def float32_mean(sum_aggregator: Aggregator | None = None, *, weighted: bool = True) -> Aggregator:
  """Mean of client updates through a sum aggregator (float32 by default).

  Weighted: each client multiplies its update by its weight before it is summed and
  sends the weight too (one float32); the server divides by the sum of the weights.
  Unweighted: the server divides by the number of clients.
  """
  weighted = check.boolean("float32_mean", "weighted", weighted)
  inner = sum_aggregator or encoded_sum(identity())

  def start(state, spec, num_clients):
    return MeanPartial(
      inner.start(state, spec, num_clients), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)
    )

  def accumulate(state, partial, updates, weights, clients, key):
    weights = weights.astype(jnp.float32)
    if weighted:
      updates = jax.tree.map(lambda x: x * _expand(weights, x), updates)
    inner_partial, client_states = inner.accumulate(
      state, partial.inner, updates, weights, clients, key
    )
    return MeanPartial(
      inner_partial, partial.weight + jnp.sum(weights), partial.clients + weights.shape[0]
    ), client_states

  def finish(state, partial, spec, key):
    total, state, measurements = inner.finish(state, partial.inner, spec, key)
    safe = nonzero(partial.weight if weighted else partial.clients)
    aggregate = jax.tree.map(lambda t: t / safe, total)
    if weighted:
      num_clients = measurements[UPLINK_BITS].shape[0]
      measurements = with_bits(measurements, num_clients, uplink_aux_bits=32)
    return aggregate, state, measurements

  return wrap(inner, start=start, accumulate=accumulate, finish=finish)


def float32_sum(stage: Stage | None = None) -> Aggregator:
  """Unweighted sum of client updates (float32 unless a stage is given)."""
  return encoded_sum(stage or identity())


def encoded_mean(
  stage: Stage | Policy,
  *,
  threshold: int = 0,
  weighted: bool = True,
  sum_before_decode: bool = True,
) -> Aggregator:
  """`float32_mean` of `encoded_sum(stage, threshold=...)`: the usual compressed aggregator."""
  stage_policy("encoded_mean", stage, threshold)  # names encoded_mean in its errors
  return float32_mean(
    encoded_sum(stage, threshold=threshold, sum_before_decode=sum_before_decode), weighted=weighted
  )


def _expand(weights, x):
  return weights.reshape(weights.shape + (1,) * (x.ndim - 1))


def _zeros(spec_tree):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), spec_tree)
