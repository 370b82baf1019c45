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

Fit: a stage declares the kind of values it takes and emits (`FLOAT`, `CODES`, `WORDS`,
`STREAM`), and `chain` refuses a part that does not fit the one before it, naming both:
a rotation of packed words or Huffman coding of floats would run and send garbage. A
stage that declares nothing (`ANY`, the default for stages written outside the package)
is never refused.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple, Protocol, Sequence, TypeVar

import jax

Spec = jax.ShapeDtypeStruct

# What a stage takes and emits, so that `chain` can refuse parts that do not fit (a
# rotation of packed words, Huffman coding of floats). A stage declares one of these:
FLOAT = "float"  # real values (a model update; rotated or sparsified values)
CODES = "codes"  # small unsigned integer codes; "codes:4" is codes of at most 4 bits
WORDS = "words"  # packed uint32 words: only a decoder can read them
STREAM = "stream"  # a bitstream in the side information; `values` is empty, nothing follows
ANY = "any"  # not declared (the default): never refused
SAME = "same"  # emits what it takes (identity, flatten)


def codes_kind(bits: int) -> str:
  """The kind of unsigned integer codes of at most `bits` bits: "codes:<bits>"."""
  return f"{CODES}:{bits}"


def _kind(kind: str) -> tuple[str, int | None]:
  base, _, width = kind.partition(":")
  return base, int(width) if width else None


def describe_kind(kind: str, *, taken: bool = False) -> str:
  """A kind in words: "float values", "integer codes of 2 bits", "packed uint32 words"."""
  base, width = _kind(kind)
  if base == CODES and width is not None:
    return f"integer codes of {'up to ' if taken else ''}{width} bit{'s' * (width != 1)}"
  return {
    FLOAT: "float values",
    CODES: "integer codes",
    WORDS: "packed uint32 words",
    STREAM: "a bitstream (in its side information)",
  }.get(base, f"{kind!r} values")


def fit_problem(before: str, emits: str, after: str, takes: str) -> str | None:
  """Why stage `after` (taking `takes`) cannot follow `before` (emitting `emits`), or None.

  Undeclared kinds (`ANY`) always fit. Codes fit a stage that takes codes at least as
  wide; a stream fits nothing.
  """
  (emitted, e_width), (taken, t_width) = _kind(emits), _kind(takes)
  if ANY in (emitted, taken):
    return None
  if emitted == STREAM:
    return (
      f"{after} cannot follow {before}: {before} emits {describe_kind(emits)} that "
      f"nothing can follow; put {after} before it, or leave it out"
    )
  mismatch = (
    f"{after} takes {describe_kind(takes, taken=True)} but {before} emits {describe_kind(emits)}"
  )
  if emitted == taken:
    if taken == CODES and t_width is not None and (e_width is None or e_width > t_width):
      return f"{mismatch}; give both the same bits"
    return None
  if taken == FLOAT:
    return f"{mismatch}; put {after} before it"
  if taken == CODES and emitted == WORDS:
    return (
      f"{mismatch}; use a stage that emits codes without packing them (e.g. "
      f"quantize_codes instead of uniform_quantize) before {after}"
    )
  if taken == CODES and emitted == FLOAT:
    return f"{mismatch}; put a stage that emits codes (e.g. quantize_codes) before {after}"
  return mismatch


class Encoded(NamedTuple):
  """A stage's output: `values` for the next stage, `side` information sent alongside."""

  values: Any
  side: Any = ()


class SharedKeys(NamedTuple):
  """Shared randomness the server can reproduce: per round (`common`) and per client."""

  common: jax.Array
  client: jax.Array


StageState = Any  # a stage's state: arrays (an adaptive stage's width), or () if stateless
# The shared key a stage gets: one key, or a chain's `SharedKeys` (each part takes the
# common or its client's key, see `chain.shared_key_for`).
SharedKey = jax.Array | SharedKeys


class StageInitFn(Protocol):
  """`init(spec) -> state` for an input of `spec` (shape and dtype)."""

  def __call__(self, spec: Spec, /) -> StageState: ...


class EncodeFn(Protocol):
  """`encode(state, x, key, shared_key) -> Encoded`: `key` is private to the encoder,
  `shared_key` known to the decoder too."""

  def __call__(
    self, state: StageState, x: jax.Array, key: jax.Array, shared_key: SharedKey, /
  ) -> Encoded: ...


class DecodeFn(Protocol):
  """`decode(state, encoded, spec, shared_key) -> x_hat`, of the input's `spec`."""

  def __call__(
    self, state: StageState, encoded: Encoded, spec: Spec, shared_key: SharedKey, /
  ) -> jax.Array: ...


class StageUpdateFn(Protocol):
  """`update(state, sides) -> state`: an adaptive stage's next state, from the stacked
  side information of a round's clients."""

  def __call__(self, state: StageState, sides: Any, /) -> StageState: ...


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
    name: how errors and reports name the stage, e.g. "uniform_quantize(bits=2)" (the
      built-in factories set it; "" for an unnamed stage).
    takes: the kind of values `encode` takes: `FLOAT`, `CODES` or `codes_kind(bits)`,
      `WORDS`, or `ANY` (the default: undeclared, never refused).
    emits: the kind of `values` it emits, the same kinds plus `STREAM` (nothing can
      follow) and `SAME` (what it takes). `chain` refuses a part whose `takes` does
      not fit the `emits` before it; undeclared stages are never refused.
  """

  init: StageInitFn
  encode: EncodeFn
  decode: DecodeFn
  commutes_with_sum: bool = False
  update: StageUpdateFn | None = None
  parts: tuple[Stage, ...] = ()
  name: str = ""
  takes: str = ANY
  emits: str = ANY


def stateless(
  encode,
  decode,
  *,
  commutes_with_sum: bool = False,
  takes: str = ANY,
  emits: str = ANY,
  name: str = "",
) -> Stage:
  """A stage without state from `encode(x, key, shared_key)`, `decode(encoded, spec, shared_key)`.

  `takes` / `emits` declare its kinds of values (see `Stage`); by default undeclared.
  """
  return Stage(
    init=lambda spec: (),
    encode=lambda state, x, key, shared_key: encode(x, key, shared_key),
    decode=lambda state, enc, spec, shared_key: decode(enc, spec, shared_key),
    commutes_with_sum=commutes_with_sum,
    name=name,
    takes=takes,
    emits=emits,
  )


F = TypeVar("F", bound=Callable[..., Stage])


def named(factory: F) -> F:
  """Decorator for a stage factory: the stage it returns is named after the call.

  The name is the factory's name and the arguments as given, all as keywords:
  `uniform_quantize(2)` is "uniform_quantize(bits=2)", `hadamard()` is "hadamard",
  the spelling `parse_stages` reads, so that an error names a stage as a config wrote it.
  """
  signature = inspect.signature(factory)

  @functools.wraps(factory)
  def build(*args, **kwargs):
    given = signature.bind(*args, **kwargs).arguments
    stage = factory(*args, **kwargs)
    arguments = ", ".join(f"{k}={v!r}" for k, v in given.items())
    return stage._replace(name=f"{factory.__name__}({arguments})" if given else factory.__name__)

  return build  # type: ignore[return-value]


def display_name(stage: Stage, index: int | None = None) -> str:
  """The stage's name, or "an unnamed stage" (with its position in a chain, if given)."""
  if stage.name:
    return stage.name
  return "an unnamed stage" if index is None else f"the unnamed stage {index + 1}"


@named
def identity() -> Stage:
  """Sends the tensor as it is (float32 for model updates)."""
  return stateless(
    lambda x, key, shared: Encoded(x),
    lambda enc, spec, shared: enc.values,
    commutes_with_sum=True,
    takes=ANY,
    emits=SAME,
  )


@named
def flatten() -> Stage:
  """Reshapes to one dimension; the shape is known to both sides and costs nothing."""
  return stateless(
    lambda x, key, shared: Encoded(x.reshape(-1)),
    lambda enc, spec, shared: enc.values.reshape(spec.shape),
    commutes_with_sum=True,
    takes=ANY,
    emits=SAME,
  )


def parts_of(stage: Stage) -> tuple[Stage, ...]:
  """The stages of a chain, or the stage itself."""
  return stage.parts or (stage,)


def check_fit(stages: Sequence[Stage], owner: str = "chain") -> tuple[str, str]:
  """What a chain of `stages` takes and emits; raises if a stage does not fit the one
  before it, naming both (`owner: hadamard takes float values but ...`).

  A stage that emits `SAME` passes the kind before it through.
  """
  takes, flowing, emitter = None, None, 0  # `emitter`: the stage that emitted `flowing`
  for i, stage in enumerate(stages):
    if flowing is not None:
      problem = fit_problem(
        display_name(stages[emitter], emitter), flowing, display_name(stage, i), stage.takes
      )
      if problem:
        raise ValueError(f"{owner}: {problem}.")
    if takes is None and (stage.emits != SAME or stage.takes != ANY):
      takes = stage.takes
    if stage.emits != SAME:
      flowing, emitter = stage.emits, i
  return takes or ANY, flowing or SAME


def check_takes_float(stage: Stage, owner: str, what: str = "a model update") -> None:
  """Raises unless `stage` can take float values (`what` names them in the message)."""
  base, _ = _kind(stage.takes)
  if base not in (FLOAT, ANY):
    raise ValueError(
      f"{owner}: {display_name(stage)} takes "
      f"{describe_kind(stage.takes, taken=True)} but {what} is float values; "
      f"start with a stage that takes float values."
    )
