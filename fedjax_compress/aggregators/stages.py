"""Encoding stages: one encode/decode step on a tensor, composable with `chain`.

A stage maps a tensor to `Encoded(values, side)`: `values` feed the next stage of a
chain, `side` is the side information (scales, ranges) sent with them. Both cross the
wire; their bits are `payload_bits` of the arrays themselves.

Randomness: `encode(state, x, key, shared_key)` gets a private per-client `key`
(stochastic rounding; never sent, the decoder does not need it) and a `shared_key`
that the server derives from the round key and knows too (a rotation's signs, a
dither): shared randomness costs no bits. `decode` gets only the shared key. Inside an
aggregator, a stage that commutes with summation gets a key common to all clients of
the round (one rotation, so the server un-rotates the sum once); any other stage gets a
key of its own client (independent dithers, so client errors average out).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax

Spec = jax.ShapeDtypeStruct


class Encoded(NamedTuple):
  """A stage's output: `values` for the next stage, `side` information sent alongside."""
  values: Any
  side: Any = ()


class SharedKeys(NamedTuple):
  """Shared randomness the server can reproduce: per round (`common`) and per client."""
  common: jax.Array
  client: jax.Array


def shared_key_for(part: "Stage", shared_key, index: int) -> jax.Array:
  """The shared key of part `index` of a chain: common if it commutes, else per client."""
  if isinstance(shared_key, SharedKeys):
    shared_key = shared_key.common if part.commutes_with_sum else shared_key.client
  return jax.random.fold_in(shared_key, index)


class Stage(NamedTuple):
  """One encode/decode step, as pure functions.

  Attributes:
    init: `init(spec) -> state` for an input of `spec` (shape and dtype).
    encode: `encode(state, x, key, shared_key) -> Encoded`.
    decode: `decode(state, encoded, spec, shared_key) -> x_hat` of the input's spec.
    commutes_with_sum: decode(sum of encodings) == sum of decodes, and `side` does not
      depend on `x`; then the server sums first and decodes once.
    update: optional `update(state, sides) -> state`, run once a round with the stacked
      side information of all clients, entropy-coded streams left out (adaptive stages).
    parts: the stages of a chain, in encoding order; () for a single stage.
  """
  init: Callable[[Spec], Any]
  encode: Callable[[Any, jax.Array, jax.Array, jax.Array], Encoded]
  decode: Callable[[Any, Encoded, Spec, jax.Array], jax.Array]
  commutes_with_sum: bool = False
  update: Callable[[Any, Any], Any] | None = None
  parts: tuple = ()


def stateless(encode, decode, *, commutes_with_sum: bool = False) -> Stage:
  """A stage without state from `encode(x, key, shared_key)`, `decode(encoded, spec, shared_key)`."""
  return Stage(init=lambda spec: (),
               encode=lambda state, x, key, shared_key: encode(x, key, shared_key),
               decode=lambda state, enc, spec, shared_key: decode(enc, spec, shared_key),
               commutes_with_sum=commutes_with_sum)


def identity() -> Stage:
  """Sends the tensor as it is (float32 for model updates)."""
  return stateless(lambda x, key, shared: Encoded(x), lambda enc, spec, shared: enc.values,
                   commutes_with_sum=True)


def flatten() -> Stage:
  """Reshapes to one dimension; the shape is known to both sides and costs nothing."""
  return stateless(lambda x, key, shared: Encoded(x.reshape(-1)),
                   lambda enc, spec, shared: enc.values.reshape(spec.shape),
                   commutes_with_sum=True)


def parts_of(stage: Stage) -> tuple[Stage, ...]:
  """The stages of a chain, or the stage itself."""
  return stage.parts or (stage,)


def chain(*stages: Stage) -> Stage:
  """Composes stages: encode left to right, decode right to left."""
  parts = tuple(p for s in stages for p in parts_of(s))
  if not parts:
    return identity()

  def init(spec):
    states = []
    for part in parts:
      states.append(part.init(spec))
      spec = _output_spec(part, states[-1], spec)
    return tuple(states)

  def encode(states, x, key, shared_key):
    sides = []
    for i, (part, state) in enumerate(zip(parts, states)):
      enc = part.encode(state, x, jax.random.fold_in(key, i), shared_key_for(part, shared_key, i))
      x = enc.values
      sides.append(enc.side)
    return Encoded(x, tuple(sides))

  def decode(states, enc, spec, shared_key):
    specs = input_specs(parts, states, spec)
    return decode_parts(parts, states, enc.values, enc.side, specs, shared_key, len(parts), 0)

  def update(states, sides):
    return tuple(p.update(s, sd) if p.update else s for p, s, sd in zip(parts, states, sides))

  return Stage(init, encode, decode,
               commutes_with_sum=all(p.commutes_with_sum for p in parts),
               update=update if any(p.update for p in parts) else None,
               parts=parts)


def input_specs(parts: Sequence[Stage], states: Sequence[Any], spec: Spec) -> list[Spec]:
  """The spec of each part's input, given the spec of the chain's input."""
  specs = []
  for part, state in zip(parts, states):
    specs.append(spec)
    spec = _output_spec(part, state, spec)
  return specs


def decode_parts(parts, states, values, sides, specs, shared_key, hi: int, lo: int):
  """Decodes through parts hi-1 down to lo, with the keys `chain` gave them."""
  for i in reversed(range(lo, hi)):
    values = parts[i].decode(states[i], Encoded(values, sides[i]), specs[i],
                             shared_key_for(parts[i], shared_key, i))
  return values


def _output_spec(stage: Stage, state, spec: Spec) -> Spec:
  key = jax.random.key(0)
  out = jax.eval_shape(lambda x: stage.encode(state, x, key, key).values, spec)
  return Spec(out.shape, out.dtype)
