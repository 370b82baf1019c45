"""Stages, aggregators and broadcasts by name, for configs.

Each kind has a `fedjax_compress.registry.Registry`: a config names a component and the
keyword arguments of its factory, and the registry checks those arguments against the
factory's signature before anything is built (an unknown key is an error naming it and
the valid ones, never ignored). Anything written elsewhere becomes usable from a config
once registered (and its module listed in `--config.imports`):

    aggregators.register_stage("my_sign", my_sign)          # my_sign(**kwargs) -> Stage
    aggregators.register_aggregator("trimmed_mean", trimmed_mean)  # (**kwargs) -> Aggregator

Stages are written as a spec string, "hadamard,uniform_quantize(bits=2)": a chain of
registered stage factories and their keyword arguments, as Python literals.

An aggregator factory receives the run's context arguments that its signature names:
`accounting` (the bit accounting, "exact" or "tff"), `clients_per_round`, and, for
privacy accounting, `num_clients` (the population) and `rounds`. A config may not set
them.
"""

from __future__ import annotations

import ast
import difflib
from typing import Any, Callable, Mapping

import jax.numpy as jnp

from fedjax_compress.aggregators import presets
from fedjax_compress.aggregators.base import Aggregator, check_accounting
from fedjax_compress.aggregators.broadcast import Broadcast, encoded_broadcast, float32_broadcast
from fedjax_compress.aggregators.encoded import encoded_mean, float32_mean, float32_sum
from fedjax_compress.aggregators.error_feedback import KINDS as ERROR_FEEDBACK_KINDS
from fedjax_compress.aggregators.error_feedback import error_feedback as with_error_feedback
from fedjax_compress.compression import arguments as check
from fedjax_compress.compression.adaptive_quantize import adaptive_quantize
from fedjax_compress.compression.base import Stage, flatten, identity
from fedjax_compress.compression.bitpack import bitpack
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.dithered import dithered, dithered_codes
from fedjax_compress.compression.drive import drive
from fedjax_compress.compression.eden import eden
from fedjax_compress.compression.entropy_code import entropy_code
from fedjax_compress.compression.hadamard import hadamard
from fedjax_compress.compression.lloyd_max import lloyd_max
from fedjax_compress.compression.qsgd import qsgd
from fedjax_compress.compression.rand_k import rand_k
from fedjax_compress.compression.scaled_sign import scaled_sign
from fedjax_compress.compression.terngrad import terngrad
from fedjax_compress.compression.top_k import top_k
from fedjax_compress.compression.uniform_quantize import quantize_codes, uniform_quantize
from fedjax_compress.registry import Registry, check_arguments

STORAGE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

stage_registry: Registry[Stage] = Registry("stage")
aggregator_registry: Registry[Aggregator] = Registry(
  "aggregator", context=("accounting", "clients_per_round", "num_clients", "rounds")
)
broadcast_registry: Registry[Broadcast] = Registry("broadcast")

for _factory in (
  identity,
  flatten,
  hadamard,
  uniform_quantize,
  quantize_codes,
  bitpack,
  drive,
  eden,
  qsgd,
  terngrad,
  scaled_sign,
  top_k,
  rand_k,
  dithered,
  dithered_codes,
  lloyd_max,
  entropy_code,
  adaptive_quantize,
):
  stage_registry.register(_factory.__name__, _factory)


# Stages.


def register_stage(name: str, factory: Callable[..., Stage] | None = None):
  """Makes `factory(**kwargs) -> Stage` available to configs as `name(kwargs...)`.

  Without `factory`, a decorator that registers the function it decorates.
  """
  return stage_registry.register(name, factory)


def stage_names() -> list[str]:
  """Names usable in a stages spec, built-in and registered."""
  return stage_registry.names()


def parse_stages(spec: str) -> Stage:
  """ "hadamard,uniform_quantize(bits=2)" -> chain(hadamard(), uniform_quantize(bits=2)).

  Raises `ValueError` naming the problem: a stage not registered, an argument its
  factory does not take (and those it does), a value out of range, parts that do not fit.
  """
  if not isinstance(spec, str):
    raise ValueError(
      f"stages={spec!r} is invalid: it must be a string such as "
      f"'hadamard,uniform_quantize(bits=2)'."
    )
  unreadable = f"Cannot parse stages {spec!r}: write e.g. 'hadamard,uniform_quantize(bits=2)'."
  try:
    tree = ast.parse(f"[{spec}]", mode="eval").body
  except SyntaxError as e:
    raise ValueError(unreadable) from e
  if not isinstance(tree, ast.List):  # e.g. "a][0": a subscript of a list
    raise ValueError(unreadable)
  parts = []
  for node in tree.elts:
    name, kwargs = _call(node, spec)
    if name not in stage_registry:
      hint = difflib.get_close_matches(name, stage_names(), n=1)
      raise ValueError(
        f"Unknown stage {name!r} in {spec!r}"
        f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; valid names: "
        f"{', '.join(stage_names())} (register others with "
        f"aggregators.register_stage and --config.imports)."
      )
    factory = stage_registry.factory(name)
    parts.append(factory(**check_arguments(f"stage {name!r}", factory, kwargs)))
  return chain(*parts)


def _call(node, spec) -> tuple[str, dict[str, Any]]:
  if isinstance(node, ast.Name):
    return node.id, {}
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
    keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg is not None}
    if len(keywords) == len(node.keywords):  # no `**mapping`
      try:
        return node.func.id, {k: ast.literal_eval(v) for k, v in keywords.items()}
      except ValueError as e:
        raise ValueError(f"Stage arguments in {spec!r} must be literals.") from e
  raise ValueError(
    f"Cannot read stage {ast.unparse(node)!r} in {spec!r}: use name or name(key=value, ...)."
  )


def _stage(owner: str, stages_spec: str | Stage) -> Stage:
  """A stage from a spec string (or a `Stage`, as it is)."""
  if isinstance(stages_spec, Stage):
    return stages_spec
  if not stages_spec:
    raise ValueError(f"{owner} needs stages, e.g. stages='hadamard,uniform_quantize(bits=2)'.")
  return parse_stages(stages_spec)


# Aggregators.


def register_aggregator(name: str, factory: Callable[..., Aggregator] | None = None):
  """Makes `factory(**kwargs) -> Aggregator` available to configs by `name`.

  The factory's keyword arguments are the config's keys; it also receives the context
  arguments its signature names (`accounting`, `clients_per_round`). Without `factory`,
  a decorator that registers the function it decorates.
  """
  return aggregator_registry.register(name, factory)


def aggregator_names() -> list[str]:
  """Names usable as an aggregator, built-in and registered."""
  return aggregator_registry.names()


def create_aggregator(
  name: str,
  arguments: Mapping[str, Any] | None = None,
  *,
  accounting: str = "exact",
  clients_per_round: int = 1,
  num_clients: int | None = None,
  rounds: int | None = None,
) -> Aggregator:
  """The aggregator registered as `name`, built from a config's `arguments`.

  E.g. `create_aggregator("encoded_mean", {"stages": "hadamard,eden(bits=2)"})`. The
  arguments are checked against the factory's signature first; `accounting`,
  `clients_per_round`, `num_clients` and `rounds` come from the run and reach factories
  that name them (the private ones account with the last two).
  """
  check_accounting(accounting)
  return aggregator_registry.create(
    name,
    arguments,
    accounting=accounting,
    clients_per_round=clients_per_round,
    num_clients=num_clients,
    rounds=rounds,
  )


def _robust(agg: Aggregator, zeroing: bool, clipping: bool, accounting: str) -> Aggregator:
  return presets.robust_aggregator(
    zeroing=zeroing, clipping=clipping, inner=agg, accounting=accounting
  )


@register_aggregator("mean")
def mean_aggregator(
  weighted: bool = True, zeroing: bool = False, clipping: bool = False, *, accounting: str = "exact"
) -> Aggregator:
  """The float32 mean, optionally inside TFF's adaptive zeroing and clipping."""
  return _robust(float32_mean(weighted=weighted), zeroing, clipping, accounting)


@register_aggregator("sum")
def sum_aggregator_factory(
  zeroing: bool = False, clipping: bool = False, *, accounting: str = "exact"
) -> Aggregator:
  """The float32 unweighted sum, optionally inside zeroing and clipping."""
  return _robust(float32_sum(), zeroing, clipping, accounting)


@register_aggregator("encoded_mean")
def encoded_mean_aggregator(
  stages: str | Stage,
  threshold: int = 20_000,
  weighted: bool = True,
  error_feedback: str = "",
  client_state_dtype: str = "float32",
  zeroing: bool = False,
  clipping: bool = False,
  *,
  accounting: str = "exact",
) -> Aggregator:
  """The mean of updates sent through `stages` (a spec string), leaves above `threshold`.

  `error_feedback` ("ef" or "ef21") sends them with error feedback, its per-client rows
  stored as `client_state_dtype` (float32, bfloat16 or float16; only with error
  feedback). `zeroing` / `clipping` wrap it in TFF's adaptive robust wrappers.
  """
  owner = "aggregator 'encoded_mean'"
  check.choice(owner, "error_feedback", error_feedback, ["", *ERROR_FEEDBACK_KINDS])
  check.choice(owner, "client_state_dtype", client_state_dtype, list(STORAGE_DTYPES))
  if client_state_dtype != "float32" and not error_feedback:
    raise ValueError(
      f"client_state_dtype={client_state_dtype!r} stores error feedback's "
      f"rows: set error_feedback too, or leave it at 'float32'."
    )
  stage = _stage(owner, stages)
  if error_feedback:
    agg = float32_mean(
      with_error_feedback(
        stage,
        threshold=threshold,
        kind=error_feedback,
        storage_dtype=STORAGE_DTYPES[client_state_dtype],
      ),
      weighted=weighted,
    )
  else:
    agg = encoded_mean(stage, threshold=threshold, weighted=weighted)
  return _robust(agg, zeroing, clipping, accounting)


@register_aggregator("compression")
def compression_aggregator_factory(
  bits: int = 8, threshold: int = 20_000, weighted: bool = True, *, accounting: str = "exact"
) -> Aggregator:
  """TFF's `compression_aggregator`: zeroing(clipping(mean of `bits`-bit quantized leaves))."""
  return presets.compression_aggregator(
    weighted=weighted, bits=bits, threshold=threshold, accounting=accounting
  )


@register_aggregator("robust")
def robust_aggregator_factory(weighted: bool = True, *, accounting: str = "exact") -> Aggregator:
  """TFF's `robust_aggregator`: zeroing(clipping(float32 mean))."""
  return presets.robust_aggregator(weighted=weighted, accounting=accounting)


@register_aggregator("dp")
def dp_aggregator_factory(
  noise_multiplier: float | None = None,
  clip_norm: float = 0.1,
  target_epsilon: float | None = None,
  delta: float = 1e-5,
  *,
  clients_per_round: int = 1,
  num_clients: int | None = None,
  rounds: int | None = None,
  accounting: str = "exact",
) -> Aggregator:
  """Central DP (DP-FedAvg; `presets.dp_aggregator`) over the run's cohort size.

  Give `noise_multiplier` or `target_epsilon` (calibrated for the run's population and
  rounds); a run logs epsilon at `delta` round by round.
  """
  if noise_multiplier is None and target_epsilon is None:
    raise ValueError(
      "aggregator 'dp' needs noise_multiplier (e.g. 1.0) or target_epsilon (e.g. 8.0)."
    )
  return presets.dp_aggregator(
    noise_multiplier,
    clients_per_round,
    clip_norm=clip_norm,
    accounting=accounting,
    target_epsilon=target_epsilon,
    delta=delta,
    num_clients=num_clients,
    rounds=rounds,
  )


def _distributed(mechanism: str):
  def factory(
    bits: int | str = "auto",
    clip_norm: float = 0.1,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    delta: float = 1e-5,
    failure_probability: float = 1e-6,
    *,
    clients_per_round: int = 1,
    num_clients: int | None = None,
    rounds: int | None = None,
  ) -> Aggregator:
    if noise_multiplier is None and target_epsilon is None:
      raise ValueError(
        f"aggregator {mechanism!r} needs noise_multiplier (e.g. 1.0) or target_epsilon (e.g. 8.0)."
      )
    from fedjax_compress.privacy.distributed import distributed_dp  # pylint: disable=import-outside-toplevel

    return distributed_dp(
      mechanism,
      clip_norm=clip_norm,
      bits=bits,
      clients_per_round=clients_per_round,
      noise_multiplier=noise_multiplier,
      target_epsilon=target_epsilon,
      delta=delta,
      num_clients=num_clients,
      rounds=rounds,
      failure_probability=failure_probability,
    )

  factory.__name__ = f"{mechanism}_aggregator"
  factory.__doc__ = (
    f"Distributed DP with {'discrete Gaussian' if mechanism == 'ddg' else 'Skellam'} "
    f"noise under secure aggregation (`privacy.distributed_dp`): each "
    f"client's update clipped, rotated, scaled, rounded, noised and sent in "
    f'Z_2^bits ("auto": the fewest bits whose rounding costs under 1% of the '
    f"sensitivity); `failure_probability` bounds a wrap-around a round."
  )
  return factory


register_aggregator("ddg", _distributed("ddg"))
register_aggregator("skellam", _distributed("skellam"))


# Broadcasts.


def register_broadcast(name: str, factory: Callable[..., Broadcast] | None = None):
  """Makes `factory(**kwargs) -> Broadcast` available to configs by `name` (or decorates)."""
  return broadcast_registry.register(name, factory)


def broadcast_names() -> list[str]:
  """Names usable as a broadcast (the downlink), built-in and registered."""
  return broadcast_registry.names()


def create_broadcast(
  name: str = "float32", arguments: Mapping[str, Any] | None = None
) -> Broadcast:
  """The broadcast registered as `name`, built from a config's `arguments` (checked first).

  E.g. `create_broadcast("encoded", {"stages": "hadamard,eden(bits=4)"})`.
  """
  return broadcast_registry.create(name, arguments)


@register_broadcast("float32")
def float32() -> Broadcast:
  """The model as it is: every parameter at its dtype's width."""
  return float32_broadcast()


@register_broadcast("encoded")
def encoded(stages: str | Stage, threshold: int = 20_000) -> Broadcast:
  """The model sent through `stages` (a spec string), leaves above `threshold` elements."""
  return encoded_broadcast(_stage("broadcast 'encoded'", stages), threshold=threshold)
