"""The downlink: the server's model sent to the round's clients, possibly encoded.

The server encodes its model once a round and every client of the round receives the same
message, so the broadcast costs `measured_bits(message)` per client. Clients train from
the decoded model and return deltas relative to it; the server applies the aggregate to
its own, exact model (the decoding error does not accumulate on the server).

Randomness: stochastic rounding uses the server's own key; a rotation or dither uses a
key derived from the round, which clients can reproduce, so it costs no bits.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from fedjax_compress.aggregators.encoded import (
  Policy,
  common_key,
  decode_leaf,
  encode_leaf,
  leaf_codecs,
  stage_policy,
)
from fedjax_compress.compression.base import Spec, Stage
from fedjax_compress.compression.bits import payload_bits
from fedjax_compress.streams import PRIVATE_STREAM


class SendFn(Protocol):
  """`send(params, key) -> (received, bits)`."""

  def __call__(self, params: Any, key: jax.Array, /) -> tuple[Any, jax.Array]: ...


class Broadcast(NamedTuple):
  """`send(params, key) -> (received, bits)`: the model as clients decode it, and the
  int32 bits of the message each client downloads."""

  send: SendFn


def float32_broadcast() -> Broadcast:
  """The model as it is: every parameter at its dtype's width."""
  return Broadcast(lambda params, key: (params, jnp.asarray(payload_bits(params), jnp.int32)))


def encoded_broadcast(stage: Stage | Policy, *, threshold: int = 0) -> Broadcast:
  """The model sent through `stage` (leaves above `threshold` elements), or a policy.

  The stage must not be adaptive (no `update`): its state would have to travel too.
  """
  adaptive_message = (
    "Adaptive stages (with `update`) cannot encode the broadcast: "
    "their state would have to be broadcast as well."
  )
  if isinstance(stage, Stage) and stage.update is not None:
    raise ValueError(adaptive_message)  # A policy's stages are known only per leaf, in `send`.
  policy = stage_policy("encoded_broadcast", stage, threshold)

  def send(params, key):
    specs = jax.tree.map(lambda x: Spec(x.shape, x.dtype), params)
    codecs, treedef = leaf_codecs(policy, specs, sum_before_decode=False)
    received, bits = [], jnp.zeros((), jnp.int32)
    for i, (codec, leaf) in enumerate(zip(codecs, treedef.flatten_up_to(params))):
      if codec.stage.update is not None:
        raise ValueError(adaptive_message)
      state = codec.stage.init(codec.spec)
      shared = common_key(key, i)  # the clients derive it too
      private = jax.random.fold_in(jax.random.fold_in(key, PRIVATE_STREAM), i)  # the server's
      enc, leaf_bits = encode_leaf(codec, state, leaf, private, shared)
      bits = bits + leaf_bits
      received.append(decode_leaf(codec, state, enc, shared))
    return treedef.unflatten(received), bits

  return Broadcast(send)
