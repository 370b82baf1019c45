"""Stages and aggregators by name, for configs.

A stage written anywhere becomes usable from a config once registered:

    aggregators.register_stage("my_sign", my_sign)   # my_sign(**kwargs) -> Stage
    config.aggregator = "encoded_mean"
    config.stages = "hadamard,my_sign(scale=0.5)"
"""

from __future__ import annotations

import ast
from typing import Any, Callable

import jax.numpy as jnp

from fedjax_compress.aggregators import presets, quantize, rotation, stages
from fedjax_compress.aggregators import (adaptive, dither, eden_quantize, entropy, lloyd,
                                         norm_quantize, one_bit, sparsify, ternary)
from fedjax_compress.aggregators.broadcast import Broadcast, encoded_broadcast, float32_broadcast
from fedjax_compress.aggregators.error_feedback import KINDS as ERROR_FEEDBACK_KINDS, error_feedback
from fedjax_compress.aggregators.core import Aggregator
from fedjax_compress.aggregators.encoded import encoded_mean, mean, sum as sum_aggregator

STORAGE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

_STAGES: dict[str, Callable[..., stages.Stage]] = {
    "identity": stages.identity,
    "flatten": stages.flatten,
    "hadamard": rotation.hadamard,
    "uniform_quantize": quantize.uniform_quantize,
    "quantize_codes": quantize.quantize_codes,
    "bitpack": quantize.bitpack,
    "drive": one_bit.drive,
    "eden": eden_quantize.eden,
    "qsgd": norm_quantize.qsgd,
    "terngrad": ternary.terngrad,
    "scaled_sign": one_bit.scaled_sign,
    "top_k": sparsify.top_k,
    "rand_k": sparsify.rand_k,
    "dithered": dither.dithered,
    "dithered_codes": dither.dithered_codes,
    "lloyd_max": lloyd.lloyd_max,
    "entropy_code": entropy.entropy_code,
    "adaptive_quantize": adaptive.adaptive_quantize,
}

AGGREGATORS = ("mean", "sum", "encoded_mean", "compression", "robust", "dp")


def register_stage(name: str, factory: Callable[..., stages.Stage]) -> None:
  """Makes `factory(**kwargs) -> Stage` available to configs as `name(kwargs...)`."""
  if not name.isidentifier():
    raise ValueError(f"Stage name {name!r} must be a Python identifier.")
  _STAGES[name] = factory


def stage_names() -> list[str]:
  """Names usable in `config.stages`, built-in and registered."""
  return sorted(_STAGES)


def parse_stages(spec: str) -> stages.Stage:
  """"hadamard,uniform_quantize(bits=2)" -> chain(hadamard(), uniform_quantize(bits=2))."""
  try:
    tree = ast.parse(f"[{spec}]", mode="eval").body
  except SyntaxError as e:
    raise ValueError(f"Cannot parse stages {spec!r}: write e.g. "
                     f"'hadamard,uniform_quantize(bits=2)'.") from e
  parts = []
  for node in tree.elts:
    name, kwargs = _call(node, spec)
    if name not in _STAGES:
      raise ValueError(f"Unknown stage {name!r} in {spec!r}; valid names: {stage_names()} "
                       f"(register others with aggregators.register_stage).")
    parts.append(_STAGES[name](**kwargs))
  return stages.chain(*parts)


def _call(node, spec) -> tuple[str, dict[str, Any]]:
  if isinstance(node, ast.Name):
    return node.id, {}
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
    try:
      return node.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError as e:
      raise ValueError(f"Stage arguments in {spec!r} must be literals.") from e
  raise ValueError(f"Cannot read stage {ast.unparse(node)!r} in {spec!r}: use name or "
                   f"name(key=value, ...).")


def create_aggregator(name: str, *, stages_spec: str = "", threshold: int = 20_000,
                      weighted: bool = True, zeroing: bool = False, clipping: bool = False,
                      bits: int = 8, accounting: str = "exact", noise_multiplier: float = 0.0,
                      clip_norm: float = 0.1, clients_per_round: int = 1,
                      error_feedback_kind: str = "",
                      client_state_dtype: str = "float32") -> Aggregator:
  """Builds an aggregator of `AGGREGATORS` from config values.

  `zeroing` / `clipping` wrap "mean", "sum" and "encoded_mean" in TFF's adaptive robust
  wrappers; "compression" and "robust" include them already. `error_feedback_kind`
  ("ef" or "ef21") sends "encoded_mean"'s stages with error feedback, its per-client
  rows stored as `client_state_dtype`.
  """
  if error_feedback_kind and name != "encoded_mean":
    raise ValueError(f"error feedback applies to aggregator='encoded_mean' (its stages), "
                     f"not {name!r}.")
  if error_feedback_kind and error_feedback_kind not in ERROR_FEEDBACK_KINDS:
    raise ValueError(f"error_feedback={error_feedback_kind!r}; valid: "
                     f"{['', *ERROR_FEEDBACK_KINDS]}.")
  if client_state_dtype not in STORAGE_DTYPES:
    raise ValueError(f"client_state_dtype={client_state_dtype!r}; valid: "
                     f"{list(STORAGE_DTYPES)}.")
  if client_state_dtype != "float32" and not error_feedback_kind:
    raise ValueError(f"client_state_dtype={client_state_dtype!r} stores error feedback's "
                     f"rows: set error_feedback too, or leave it at 'float32'.")
  if name == "compression":
    return presets.compression_aggregator(weighted=weighted, bits=bits, threshold=threshold,
                                          accounting=accounting)
  if name == "robust":
    return presets.robust_aggregator(weighted=weighted, accounting=accounting)
  if name == "dp":
    return presets.dp_aggregator(noise_multiplier, clients_per_round, clip_norm=clip_norm,
                                 accounting=accounting)
  if name == "mean":
    agg = mean(weighted=weighted)
  elif name == "sum":
    agg = sum_aggregator()
  elif name == "encoded_mean":
    if not stages_spec:
      raise ValueError("aggregator='encoded_mean' needs stages, e.g. "
                       "--config.stages='hadamard,uniform_quantize(bits=2)'.")
    stage = parse_stages(stages_spec)
    if error_feedback_kind:
      agg = mean(error_feedback(stage, threshold=threshold, kind=error_feedback_kind,
                                storage_dtype=STORAGE_DTYPES[client_state_dtype]),
                 weighted=weighted)
    else:
      agg = encoded_mean(stage, threshold=threshold, weighted=weighted)
  else:
    raise ValueError(f"Unknown aggregator {name!r}; valid names: {list(AGGREGATORS)}.")
  return presets.robust_aggregator(zeroing=zeroing, clipping=clipping, inner=agg,
                                   accounting=accounting)


def create_broadcast(stages_spec: str = "", *, threshold: int = 20_000) -> Broadcast:
  """The downlink from config values: float32, or the model through `stages_spec`."""
  if not stages_spec:
    return float32_broadcast()
  return encoded_broadcast(parse_stages(stages_spec), threshold=threshold)
