"""Stages, chains and aggregators refuse what they cannot do, naming it; configs build
exactly what the library builds."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import aggregators as agg
from fedjax_compress import compression
from fedjax_compress.registry import ComponentError

KEY = jax.random.key(0)


# Arguments: every stage factory checks types and ranges; nothing is clamped.

BAD_ARGUMENTS = [
  # (stage, arguments, the argument named, the rule stated)
  ("top_k", dict(fraction=5.0), "fraction", r"in \(0, 1\]"),
  ("top_k", dict(fraction=0.0), "fraction", r"in \(0, 1\]"),
  ("top_k", dict(fraction=-0.1), "fraction", r"in \(0, 1\]"),
  ("top_k", dict(fraction=float("nan")), "fraction", r"in \(0, 1\]"),
  ("top_k", dict(fraction=True), "fraction", r"a number in \(0, 1\]"),
  ("top_k", dict(k=0), "k", "an int >= 1"),
  ("top_k", dict(k=2.0), "k", "an int >= 1"),
  ("top_k", dict(k=True), "k", "an int >= 1"),
  ("rand_k", dict(fraction=1.5), "fraction", r"in \(0, 1\]"),
  ("rand_k", dict(k=-3), "k", "an int >= 1"),
  ("uniform_quantize", dict(bits=0), "bits", r"an int in 1\.\.16"),
  ("uniform_quantize", dict(bits=17), "bits", r"an int in 1\.\.16"),
  ("uniform_quantize", dict(bits=2.0), "bits", r"an int in 1\.\.16"),
  ("uniform_quantize", dict(bits=True), "bits", r"an int in 1\.\.16"),
  ("uniform_quantize", dict(stochastic=1), "stochastic", "True or False"),
  ("uniform_quantize", dict(pack="yes"), "pack", "True or False"),
  ("uniform_quantize", dict(word_bits=33), "word_bits", r"an int in 1\.\.32"),
  ("quantize_codes", dict(bits=2.5), "bits", r"an int in 1\.\.16"),
  ("quantize_codes", dict(bits=4, stochastic=0), "stochastic", "True or False"),
  ("bitpack", dict(bits=17), "bits", r"an int in 1\.\.16"),
  ("bitpack", dict(bits=4, word_bits=0), "word_bits", r"an int in 1\.\.32"),
  ("hadamard", dict(block_size=100), "block_size", "None or a power of two"),
  ("hadamard", dict(block_size=0), "block_size", "None or a power of two"),
  ("hadamard", dict(block_size=64.0), "block_size", "None or a power of two"),
  ("drive", dict(unbiased=1), "unbiased", "True or False"),
  ("drive", dict(block_size=3), "block_size", "None or a power of two"),
  ("eden", dict(bits=0), "bits", r"an int in 1\.\.8"),
  ("eden", dict(bits=9), "bits", r"an int in 1\.\.8"),
  ("eden", dict(block_size=6), "block_size", "None or a power of two"),
  ("qsgd", dict(levels=0), "levels", r"an int in 1\.\.32767"),
  ("qsgd", dict(levels=40_000), "levels", r"an int in 1\.\.32767"),
  ("qsgd", dict(levels=7.0), "levels", r"an int in 1\.\.32767"),
  ("qsgd", dict(bucket_size=0), "bucket_size", "an int >= 1"),
  ("dithered", dict(bits=0), "bits", r"an int in 1\.\.16"),
  ("dithered", dict(step=0.0), "step", "> 0"),
  ("dithered", dict(step=float("inf")), "step", "> 0"),
  ("dithered_codes", dict(bits=17), "bits", r"an int in 1\.\.16"),
  ("dithered_codes", dict(bits=4, step=-1.0), "step", "> 0"),
  ("lloyd_max", dict(bits=9), "bits", r"an int in 1\.\.8"),
  ("lloyd_max", dict(bits=2, iterations=-1), "iterations", "an int >= 0"),
  ("lloyd_max", dict(bits=2, iterations=2.0), "iterations", "an int >= 0"),
  ("entropy_code", dict(bits=0), "bits", r"an int in 1\.\.16"),
  ("entropy_code", dict(bits=17), "bits", r"an int in 1\.\.16"),
  ("adaptive_quantize", dict(target_vnmse=0.0), "target_vnmse", "> 0"),
  ("adaptive_quantize", dict(target_vnmse=0.1, min_bits=0), "min_bits", r"an int in 1\.\.16"),
  (
    "adaptive_quantize",
    dict(target_vnmse=0.1, max_bits=2, min_bits=3, initial_bits=3),
    "max_bits",
    r"an int in 3\.\.16",
  ),
  ("adaptive_quantize", dict(target_vnmse=0.1, drop_margin=0.5), "drop_margin", ">= 1"),
  ("adaptive_quantize", dict(target_vnmse=0.1, stochastic=1), "stochastic", "True or False"),
]


@pytest.mark.parametrize(
  "stage, arguments, name, rule", BAD_ARGUMENTS, ids=[f"{s}-{a}" for s, a, _, _ in BAD_ARGUMENTS]
)
def test_bad_stage_arguments_name_the_stage_argument_value_and_range(stage, arguments, name, rule):
  value = arguments[name]
  expected = rf"^{stage}: {name}={re.escape(repr(value))} is invalid: it must be {rule}"
  with pytest.raises(ValueError, match=expected):
    getattr(compression, stage)(**arguments)
  # The same from a config's spec string (where it is representable as a literal).
  if not (isinstance(value, float) and not math.isfinite(value)):
    spec = f"{stage}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
    with pytest.raises(ValueError, match=expected):
      agg.parse_stages(spec)


def test_the_issues_top_k_examples_are_errors_with_the_documented_text():
  with pytest.raises(
    ValueError, match=re.escape("top_k: fraction=5.0 is invalid: it must be in (0, 1]")
  ):
    compression.top_k(fraction=5.0)
  with pytest.raises(
    ValueError, match=re.escape("top_k: fraction=0.0 is invalid: it must be in (0, 1]")
  ):
    compression.top_k(fraction=0.0)


def test_top_k_needs_exactly_one_of_k_and_fraction():
  for kwargs in ({}, {"k": 5, "fraction": 0.1}):
    with pytest.raises(ValueError, match="top_k: give exactly one of k and fraction"):
      compression.top_k(**kwargs)


def test_k_above_a_tensors_size_is_an_error_not_a_clamp():
  stage = compression.top_k(50)
  x = jnp.ones(30)
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  with pytest.raises(
    ValueError,
    match=r"top_k: k=50 is invalid for a tensor of 30 values: "
    r"it must be in 1\.\.30",
  ):
    stage.encode(stage.init(spec), x, KEY, KEY)


@pytest.mark.parametrize(
  "make",
  [
    lambda t: agg.encoded_sum(compression.uniform_quantize(2), threshold=t),
    lambda t: agg.encoded_mean(compression.uniform_quantize(2), threshold=t),
    lambda t: agg.error_feedback(compression.drive(), threshold=t),
    lambda t: agg.encoded_broadcast(compression.drive(), threshold=t),
    lambda t: agg.compression_aggregator(threshold=t),
  ],
  ids=["encoded_sum", "encoded_mean", "error_feedback", "encoded_broadcast", "compression"],
)
@pytest.mark.parametrize("threshold", [-1, 2.5, True, "20000"])
def test_the_encoded_aggregators_check_their_threshold(make, threshold):
  with pytest.raises(
    ValueError,
    match=rf"threshold={re.escape(repr(threshold))} is invalid: "
    rf"it must be an int >= 0",
  ):
    make(threshold)


def test_unknown_stage_arguments_are_named_with_the_valid_ones():
  with pytest.raises(
    ValueError,
    match=r"'bitz' is not an argument of stage 'uniform_quantize' "
    r"\(did you mean 'bits'\?\); it takes: bits, stochastic, "
    r"pack, word_bits",
  ):
    agg.parse_stages("uniform_quantize(bitz=2)")
  with pytest.raises(
    ValueError, match="'bits' is not an argument of stage 'terngrad'.*no arguments"
  ):
    agg.parse_stages("hadamard,terngrad(bits=2)")
  with pytest.raises(ValueError, match=r"Unknown stage 'hadamrd'.*did you mean 'hadamard'"):
    agg.parse_stages("hadamrd,uniform_quantize(bits=2)")


# Chains: parts that do not fit are refused, naming both.


def test_a_rotation_after_packing_is_refused_naming_both_parts():
  message = re.escape(
    "chain: hadamard takes float values but uniform_quantize(bits=2) emits "
    "packed uint32 words; put hadamard before it."
  )
  with pytest.raises(ValueError, match=message):
    agg.parse_stages("uniform_quantize(bits=2),hadamard")
  with pytest.raises(ValueError, match=message):
    compression.chain(compression.uniform_quantize(2), compression.hadamard())
  # A stage that passes values through (flatten) does not hide the misfit.
  with pytest.raises(ValueError, match=message):
    compression.chain(
      compression.uniform_quantize(2), compression.flatten(), compression.hadamard()
    )


@pytest.mark.parametrize(
  "spec, message",
  [
    (
      "quantize_codes(bits=2),hadamard",
      "hadamard takes float values but quantize_codes(bits=2) emits integer codes of 2 bits",
    ),
    (
      "hadamard,bitpack(bits=2)",
      "bitpack(bits=2) takes integer codes of up to 2 bits but hadamard emits float values",
    ),
    (
      "quantize_codes(bits=4),bitpack(bits=2)",
      "bitpack(bits=2) takes integer codes of up to 2 bits but quantize_codes(bits=4) emits "
      "integer codes of 4 bits; give both the same bits",
    ),
    (
      "uniform_quantize(bits=4),entropy_code(bits=4)",
      "entropy_code(bits=4) takes integer codes of up to 4 bits but uniform_quantize(bits=4) "
      "emits packed uint32 words",
    ),
    (
      "adaptive_quantize(target_vnmse=0.1),bitpack(bits=2)",
      "bitpack(bits=2) cannot follow adaptive_quantize(target_vnmse=0.1)",
    ),
    (
      "dithered_codes(bits=8),entropy_code(bits=8),hadamard",
      "hadamard cannot follow entropy_code(bits=8)",
    ),
    ("drive,top_k(k=5)", "top_k(k=5) takes float values but drive emits packed uint32 words"),
  ],
)
def test_misfits_are_refused_by_name(spec, message):
  with pytest.raises(ValueError, match=f"^chain: {re.escape(message)}"):
    agg.parse_stages(spec)


def test_an_aggregator_refuses_a_stage_that_does_not_take_float_updates():
  for make in (agg.encoded_mean, agg.encoded_sum, agg.error_feedback, agg.encoded_broadcast):
    with pytest.raises(
      ValueError,
      match="bitpack\\(bits=2\\) takes integer codes of up to 2 "
      "bits but a model update is float values",
    ):
      make(compression.bitpack(2))
  # A policy's stages are checked per leaf.
  policy_sum = agg.encoded_sum(lambda path, spec: compression.bitpack(2))
  with pytest.raises(ValueError, match=r"leaf \['w'\] of the update is float values"):
    policy_sum.init({"w": jnp.zeros(4)})


@pytest.mark.parametrize(
  "spec",
  [
    "hadamard,uniform_quantize(bits=2)",
    "top_k(fraction=0.1),uniform_quantize(bits=4)",
    "hadamard,dithered_codes(bits=8,step=0.1),entropy_code(bits=8)",
    "quantize_codes(bits=4),entropy_code(bits=8)",
    "flatten,hadamard,eden(bits=2)",
    "rand_k(fraction=0.5),hadamard",
    "drive",
    "qsgd",
    "terngrad",
    "scaled_sign",
    "lloyd_max(bits=3)",
    "uniform_quantize(bits=3,pack=False),bitpack(bits=3)",
    "adaptive_quantize(target_vnmse=0.1)",
    "identity,identity",
  ],
)
def test_chains_that_fit_are_built_and_named_as_written(spec):
  stage = agg.parse_stages(spec)
  assert stage.takes in (compression.FLOAT, compression.ANY)
  assert stage.name.replace(" ", "") == spec


def test_undeclared_custom_stages_are_never_refused():
  custom = compression.stateless(
    lambda x, key, shared: compression.Encoded(x), lambda enc, spec, shared: enc.values
  )
  assert custom.takes == custom.emits == compression.ANY and custom.name == ""
  # The user's business:
  stage = compression.chain(compression.uniform_quantize(2), custom, compression.hadamard())
  assert len(stage.parts) == 4
  # A positional Stage(...) as docs/writing_a_stage.md shows still works.
  positional = compression.Stage(lambda spec: (), custom.encode, custom.decode, True, None)
  assert compression.chain(positional, compression.uniform_quantize(2)).takes == compression.ANY
  with pytest.raises(ValueError, match="the unnamed stage 2"):
    compression.chain(compression.uniform_quantize(2), custom._replace(takes=compression.FLOAT))


def test_stage_names_read_back_as_their_spec():
  assert compression.uniform_quantize(2).name == "uniform_quantize(bits=2)"
  assert compression.top_k(fraction=0.1).name == "top_k(fraction=0.1)"
  assert compression.hadamard().name == "hadamard"
  assert (
    compression.chain(compression.hadamard(), compression.eden(4)).name == "hadamard,eden(bits=4)"
  )
  stage = agg.parse_stages(
    compression.chain(compression.hadamard(), compression.dithered(4, step=0.5)).name
  )
  assert stage.name == "hadamard,dithered(bits=4, step=0.5)"


def test_parse_stages_builds_chains_and_names_the_valid_stages():
  stage = agg.parse_stages("hadamard, uniform_quantize(bits=2, stochastic=False)")
  assert len(stage.parts) == 3  # hadamard, quantize_codes, bitpack
  with pytest.raises(ValueError, match="valid names"):
    agg.parse_stages("hadamard,nope")
  with pytest.raises(ValueError, match="literals"):
    agg.parse_stages("uniform_quantize(bits=x)")


# Aggregators by name: the registry builds exactly what the library builds.


def _updates(clients=4, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "big": jnp.asarray(rng.normal(size=(clients, 40, 30)), jnp.float32),
    "small": jnp.asarray(rng.normal(size=(clients, 7)), jnp.float32),
  }


def _run(aggregator, rounds=2):
  updates = _updates()
  template = jax.tree.map(lambda x: x[0], updates)
  state = aggregator.init(template)
  rows = (
    jax.tree.map(lambda x: jnp.zeros((4, *x.shape), jnp.float32), template)
    if aggregator.client_init
    else ()
  )
  out = []
  for r in range(rounds):
    weights = jnp.asarray([1.0, 3.0, 0.5, 2.0])
    total, state, m, rows = jax.jit(aggregator.apply_with_clients)(
      state, updates, weights, jax.random.key(r), rows
    )
    out.append((total, m))
  return out


@pytest.mark.parametrize(
  "name, arguments, direct",
  [
    ("mean", {}, lambda: agg.float32_mean()),
    (
      "mean",
      {"weighted": False, "zeroing": True, "clipping": True},
      lambda: agg.robust_aggregator(inner=agg.float32_mean(weighted=False)),
    ),
    (
      "sum",
      {"clipping": True},
      lambda: agg.robust_aggregator(zeroing=False, inner=agg.float32_sum()),
    ),
    (
      "encoded_mean",
      {"stages": "hadamard,uniform_quantize(bits=2)", "threshold": 100},
      lambda: agg.encoded_mean(
        compression.chain(compression.hadamard(), compression.uniform_quantize(2)), threshold=100
      ),
    ),
    (
      "encoded_mean",
      {
        "stages": "top_k(fraction=0.1)",
        "threshold": 10,
        "error_feedback": "ef21",
        "client_state_dtype": "bfloat16",
      },
      lambda: agg.float32_mean(
        agg.error_feedback(
          compression.top_k(fraction=0.1), threshold=10, kind="ef21", storage_dtype=jnp.bfloat16
        )
      ),
    ),
    (
      "compression",
      {"threshold": 100, "bits": 4},
      lambda: agg.compression_aggregator(threshold=100, bits=4, accounting="tff"),
    ),
    ("robust", {"weighted": False}, lambda: agg.robust_aggregator(weighted=False)),
    (
      "dp",
      {"noise_multiplier": 1.0, "clip_norm": 0.5},
      lambda: agg.dp_aggregator(1.0, 4, clip_norm=0.5, accounting="tff"),
    ),
  ],
)
@pytest.mark.slow
def test_aggregators_by_name_are_bitwise_the_library_ones(name, arguments, direct):
  accounting = "tff" if name in ("compression", "dp") else "exact"
  by_name = agg.create_aggregator(name, arguments, accounting=accounting, clients_per_round=4)
  for (a, ma), (b, mb) in zip(_run(by_name), _run(direct())):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
    assert ma.keys() == mb.keys()
    for k in ma:
      np.testing.assert_array_equal(ma[k], mb[k])


def test_aggregator_config_mistakes_are_named():
  with pytest.raises(
    ComponentError,
    match="'stages' is not an argument of aggregator 'mean'; it takes: weighted, zeroing, clipping",
  ):
    agg.create_aggregator("mean", {"stages": "drive"})
  with pytest.raises(ComponentError, match="'accounting' is set by the run"):
    agg.create_aggregator("mean", {"accounting": "tff"})
  with pytest.raises(ComponentError, match="aggregator 'encoded_mean' needs 'stages'"):
    agg.create_aggregator("encoded_mean")
  with pytest.raises(ValueError, match="needs stages"):
    agg.create_aggregator("encoded_mean", {"stages": ""})
  with pytest.raises(ComponentError, match="unknown aggregator 'median'"):
    agg.create_aggregator("median")
  with pytest.raises(ValueError, match="error_feedback='ef3' is invalid"):
    agg.create_aggregator("encoded_mean", {"stages": "drive", "error_feedback": "ef3"})
  with pytest.raises(ValueError, match="set error_feedback too"):
    agg.create_aggregator("encoded_mean", {"stages": "drive", "client_state_dtype": "float16"})
  with pytest.raises(ValueError, match="weighted='yes' is invalid: it must be True or False"):
    agg.create_aggregator("mean", {"weighted": "yes"})
  with pytest.raises(ValueError, match=r"bit_accounting='approx'"):
    agg.create_aggregator("mean", accounting="approx")
  with pytest.raises(ValueError, match="top_k: fraction=5.0 is invalid"):
    agg.create_aggregator("encoded_mean", {"stages": "top_k(fraction=5.0)"})


def test_registered_aggregators_receive_the_context_they_name():
  seen = {}

  @agg.register_aggregator("test_scaled_mean")
  def scaled_mean(scale: float = 1.0, *, clients_per_round: int) -> agg.Aggregator:
    seen.update(scale=scale, clients_per_round=clients_per_round)
    return agg.float32_mean()

  assert "test_scaled_mean" in agg.aggregator_names()
  assert agg.aggregator_registry.factory("test_scaled_mean") is scaled_mean
  agg.create_aggregator("test_scaled_mean", {"scale": 2.0}, clients_per_round=7)
  assert seen == {"scale": 2.0, "clients_per_round": 7}


def test_broadcasts_by_name():
  assert {"encoded", "float32"} <= set(agg.broadcast_names())
  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)), jnp.float32)}
  received, bits = agg.create_broadcast().send(params, KEY)
  np.testing.assert_array_equal(received["w"], params["w"])
  assert int(bits) == 64 * 64 * 32
  encoded = agg.create_broadcast("encoded", {"stages": "hadamard,eden(bits=4)", "threshold": 0})
  direct = agg.encoded_broadcast(
    compression.chain(compression.hadamard(), compression.eden(4)), threshold=0
  )
  for a, b in zip(
    jax.tree.leaves(encoded.send(params, KEY)), jax.tree.leaves(direct.send(params, KEY))
  ):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ComponentError, match="'threshold' is not an argument of broadcast 'float32'"):
    agg.create_broadcast("float32", {"threshold": 0})
  with pytest.raises(ValueError, match="Adaptive stages"):
    agg.create_broadcast("encoded", {"stages": "adaptive_quantize(target_vnmse=0.1)"})
