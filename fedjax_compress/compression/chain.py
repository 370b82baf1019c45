"""`chain`: stages composed into one, each part with the keys and specs it needs.

A chain encodes left to right and decodes right to left. Its part `i` gets
`fold_in(key, i)` of the private key, and of the shared key the round's common one if it
commutes with summation, else its client's (`shared_key_for`); `input_specs` and
`decode_parts` let an aggregator decode a chain part by part (the server decodes the
commuting run once, after summing).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax

from fedjax_compress.compression.base import (
  Encoded,
  SharedKeys,
  Spec,
  Stage,
  check_fit,
  identity,
  parts_of,
)


def shared_key_for(part: Stage, shared_key, index: int) -> jax.Array:
  """The shared key of part `index` of a chain: common if it commutes, else per client."""
  if isinstance(shared_key, SharedKeys):
    shared_key = shared_key.common if part.commutes_with_sum else shared_key.client
  return jax.random.fold_in(shared_key, index)


def chain(*stages: Stage) -> Stage:
  """Composes stages: encode left to right, decode right to left.

  Refuses stages that do not fit (see `check_fit`), naming both; the chain takes what
  its first stage takes and emits what its last emits, and is named after its stages.
  """
  parts = tuple(p for s in stages for p in parts_of(s))
  if not parts:
    return identity()
  takes, emits = check_fit(stages)
  name = ",".join(s.name or "unnamed" for s in stages) if any(s.name for s in stages) else ""

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

  return Stage(
    init,
    encode,
    decode,
    commutes_with_sum=all(p.commutes_with_sum for p in parts),
    update=update if any(p.update for p in parts) else None,
    parts=parts,
    name=name,
    takes=takes,
    emits=emits,
  )


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
    values = parts[i].decode(
      states[i], Encoded(values, sides[i]), specs[i], shared_key_for(parts[i], shared_key, i)
    )
  return values


def _output_spec(stage: Stage, state, spec: Spec) -> Spec:
  key = jax.random.key(0)
  out = jax.eval_shape(lambda x: stage.encode(state, x, key, key).values, spec)
  return Spec(out.shape, out.dtype)
