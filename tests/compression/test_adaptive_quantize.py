"""The adaptive-width quantizer: exact packing and bits, unbiasedness, and its controller.

Tolerances follow from the math: stochastic rounding to a grid of step s errs by a
Bernoulli multiple of s, of variance at most s^2 / 4 per coordinate, so the mean of T
decodes lies within 5 s / (2 sqrt(T)) of x (5 sigma); rounding to nearest errs by at
most s / 2.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress.aggregators.encoded import encoded_mean
from fedjax_compress.compression.adaptive_quantize import (
  adaptive_quantize,
  capacity_words,
  drop_factor,
  next_bits,
  pack_codes,
  unpack_codes,
)
from fedjax_compress.compression.bits import measured_bits, payload_bits

SIDE_BITS = 2 * 32 + 8 + 32  # lo, hi, the width, the distortion


def _gaussian(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _spec(x):
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


@functools.cache
def _codec(stochastic=True):
  """A stage and its jitted `encode(bits, x, key)`, `decode(bits, enc, spec)`.

  The width is a traced argument, so each compiles once per shape: the tests share them.
  """
  stage = adaptive_quantize(1e-2, max_bits=8, initial_bits=1, stochastic=stochastic)
  encode = jax.jit(lambda bits, x, key: stage.encode(bits, x, key, None))
  decode = jax.jit(lambda bits, enc, spec: stage.decode(bits, enc, spec, None), static_argnums=2)
  return stage, encode, decode


def _stream_bits(words):
  """The stream's bits, bit j being bit j % 32 of word j // 32 (numpy reference)."""
  return np.unpackbits(np.asarray(words, "<u4").view(np.uint8), bitorder="little")


def _step(x, bits):
  x = np.asarray(x, np.float64)
  return (x.max() - x.min()) / (2**bits - 1)


# Packing at a traced width.


@functools.partial(jax.jit, static_argnums=2)
def _pack_unpack(codes, bits, max_bits):
  stream = pack_codes(codes, bits, capacity_words(codes.size, max_bits))
  return stream, unpack_codes(stream.words, bits, codes.size)


@pytest.mark.parametrize("bits", range(1, 9))
def test_packing_round_trips_at_exactly_bits_per_code(bits):
  n = 45  # codes straddle words for every width that does not divide 32
  codes = np.random.default_rng(bits).integers(0, 2**bits, n).astype(np.uint32)
  stream, back = _pack_unpack(jnp.asarray(codes), jnp.int32(bits), 8)
  assert stream.words.shape == (math.ceil(8 * n / 32),)
  assert int(stream.num_bits) == bits * n
  np.testing.assert_array_equal(back, codes)
  # The layout: code i at bits i*b .. i*b + b - 1, least significant bit first; nothing after.
  expected = ((codes[:, None] >> np.arange(bits)) & 1).reshape(-1)
  laid_out = _stream_bits(stream.words)
  np.testing.assert_array_equal(laid_out[: bits * n], expected)
  assert not laid_out[bits * n :].any()
  assert not np.asarray(stream.words)[math.ceil(bits * n / 32) :].any()


def test_packing_with_a_traced_width_compiles_once():
  n, traces = 50, []

  @jax.jit
  def round_trip(codes, bits):
    traces.append(1)
    stream = pack_codes(codes, bits, capacity_words(n, 16))
    return stream, unpack_codes(stream.words, bits, n)

  rng = np.random.default_rng(0)
  for bits in (1, 3, 7, 13, 16):
    codes = rng.integers(0, 2**bits, n).astype(np.uint32)
    stream, back = round_trip(jnp.asarray(codes), jnp.int32(bits))
    np.testing.assert_array_equal(back, codes)
    assert int(stream.num_bits) == bits * n
    assert not np.asarray(stream.words)[math.ceil(bits * n / 32) :].any()
  assert len(traces) == 1


# Bits.


@pytest.mark.parametrize("bits, shape", [(1, (70,)), (3, (7, 11)), (8, (33,))])
def test_measured_bits_are_the_codes_at_their_width_plus_the_side(bits, shape):
  x = _gaussian(shape)
  _, encode, _ = _codec()
  enc = encode(jnp.int32(bits), x, jax.random.key(0))
  n = math.prod(shape)
  side = enc.side
  # The arrays themselves: a stream of b*n bits, two float32, a uint8, a float32.
  assert int(side.stream.num_bits) == bits * n
  assert side.stream.words.dtype == jnp.uint32
  assert [(a.dtype, a.shape) for a in (side.lo, side.hi, side.bits, side.distortion)] == [
    (jnp.float32, ()),
    (jnp.float32, ()),
    (jnp.uint8, ()),
    (jnp.float32, ()),
  ]
  assert int(side.bits) == bits
  assert enc.values.size == 0
  assert int(measured_bits(enc)) == bits * n + SIDE_BITS
  # The static bound counts the buffer, sized for max_bits.
  assert payload_bits(enc) == 32 * math.ceil(8 * n / 32) + SIDE_BITS


# Rounding.


def test_stochastic_rounding_is_unbiased():
  x, bits, trials = _gaussian(64, seed=1), 2, 2000
  tolerance = 5 * _step(x, bits) / (2 * math.sqrt(trials))

  def mean_decode(stochastic):
    stage = adaptive_quantize(1e-2, initial_bits=bits, stochastic=stochastic)
    state = stage.init(_spec(x))
    one = lambda k: stage.decode(state, stage.encode(state, x, k, None), _spec(x), None)
    return np.asarray(
      jnp.mean(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), trials)), axis=0)
    )

  assert np.max(np.abs(mean_decode(True) - np.asarray(x))) <= tolerance
  # The same test catches a biased rounding: to nearest errs by up to half a step.
  assert np.max(np.abs(mean_decode(False) - np.asarray(x))) > tolerance


@pytest.mark.parametrize("bits", [1, 2, 5, 8])
def test_rounding_to_nearest_errs_by_at_most_half_a_step(bits):
  x = _gaussian((4, 25), seed=bits)
  _, encode, decode = _codec(stochastic=False)
  x_hat = decode(jnp.int32(bits), encode(jnp.int32(bits), x, jax.random.key(0)), _spec(x))
  assert x_hat.shape == x.shape
  error = np.abs(np.asarray(x_hat, np.float64) - np.asarray(x, np.float64))
  assert error.max() <= _step(x, bits) / 2 * (1 + 1e-5) + 1e-6
  # The extremes are grid points.
  assert float(jnp.min(x_hat)) == pytest.approx(float(jnp.min(x)), abs=1e-6)
  assert float(jnp.max(x_hat)) == pytest.approx(float(jnp.max(x)), abs=1e-5)


@pytest.mark.parametrize("stochastic", [True, False])
@pytest.mark.parametrize("value", [0.0, -2.5])
def test_a_constant_tensor_decodes_exactly(stochastic, value):
  x = jnp.full((3, 7), value, jnp.float32)
  _, encode, decode = _codec(stochastic=stochastic)
  enc = encode(jnp.int32(3), x, jax.random.key(0))
  np.testing.assert_array_equal(decode(jnp.int32(3), enc, _spec(x)), x)
  assert float(enc.side.distortion) == 0.0  # zero error, and ||x|| = 0 does not divide


# The reported distortion.


@pytest.mark.parametrize("bits", [1, 3, 6])
def test_the_reported_distortion_is_the_decoded_one(bits):
  x = _gaussian((10, 30), seed=bits)
  _, encode, decode = _codec()
  enc = encode(jnp.int32(bits), x, jax.random.key(bits))
  x_hat = np.asarray(decode(jnp.int32(bits), enc, _spec(x)), np.float64)
  x64 = np.asarray(x, np.float64)
  distortion = np.sum((x_hat - x64) ** 2) / np.sum(x64**2)
  assert distortion > 0
  assert float(enc.side.distortion) == pytest.approx(distortion, rel=1e-4)


def test_decoding_reads_the_width_from_the_message_not_the_server_state():
  x = _gaussian(40)
  _, encode, decode = _codec()
  enc = encode(jnp.int32(3), x, jax.random.key(0))
  at_3 = decode(jnp.int32(3), enc, _spec(x))
  np.testing.assert_array_equal(decode(jnp.int32(7), enc, _spec(x)), at_3)
  assert np.abs(np.asarray(at_3 - x)).max() <= _step(x, 3) * (1 + 1e-5)


# The controller.


def test_the_rule_on_its_boundaries():
  target = 1e-2
  rule = lambda bits, d, lo=1, hi=8: int(next_bits(jnp.int32(bits), jnp.float32(d), target, lo, hi))
  assert float(drop_factor(jnp.int32(4))) == pytest.approx((15 / 7) ** 2)
  assert math.isinf(float(drop_factor(jnp.int32(1))))
  assert rule(4, 1.01 * target) == 5  # missed
  assert rule(4, target) == 4  # met exactly
  assert rule(4, target / (15 / 7) ** 2 * 1.01) == 4  # 3 bits would miss
  assert rule(4, target / (15 / 7) ** 2 * 0.99) == 3  # 3 bits would meet it
  assert rule(1, 0.0) == 1  # nothing narrower
  assert rule(8, 1.0) == 8 and rule(2, 0.0, lo=2) == 2  # clipped
  assert rule(2, 0.0) == 1
  # With a margin, a bit is dropped only with that much slack.
  margin_rule = lambda d: int(next_bits(jnp.int32(4), jnp.float32(d), target, 1, 8, 1.5))
  assert margin_rule(target / (15 / 7) ** 2 * 0.99) == 4
  assert margin_rule(target / (15 / 7) ** 2 / 1.5 * 0.99) == 3


def test_update_averages_the_distortions_of_the_round_s_clients():
  stage, encode, _ = _codec()  # target 1e-2
  x = _gaussian((3, 20))
  sides = jax.vmap(lambda xc: encode(jnp.int32(4), xc, jax.random.key(0)))(x).side
  with_distortions = lambda *d: sides._replace(distortion=jnp.asarray(d, jnp.float32))
  # One client misses the target, the mean meets it (and 3 bits would not): keep 4.
  assert int(stage.update(jnp.int32(4), with_distortions(0.0, 0.015, 0.0101))) == 4
  assert int(stage.update(jnp.int32(4), with_distortions(0.0, 0.015, 0.0160))) == 5
  assert int(stage.update(jnp.int32(4), with_distortions(0.0, 0.001, 0.0))) == 3  # 1.5x slack


def _run_controller(stage, x, rounds, seed=0):
  """Widths of `rounds` rounds of encode -> update, x [clients, n], keys fresh each round."""
  clients = x.shape[0]

  @jax.jit
  def round_(state, key):
    sides = jax.vmap(lambda xc, k: stage.encode(state, xc, k, k).side)(
      x, jax.random.split(key, clients)
    )
    return stage.update(state, sides)

  state, widths = stage.init(_spec(x[0])), []
  for t in range(rounds):
    widths.append(int(state))
    state = round_(state, jax.random.fold_in(jax.random.key(seed), t))
    assert state.dtype == jnp.int32 and state.shape == ()
  return widths + [int(state)]


def test_a_tiny_target_climbs_one_bit_a_round_to_max_bits():
  stage = adaptive_quantize(1e-12, initial_bits=4, max_bits=8)
  assert _run_controller(stage, _gaussian((3, 100)), 7) == [4, 5, 6, 7, 8, 8, 8, 8]


@pytest.mark.parametrize("min_bits", [1, 2])
def test_a_huge_target_falls_one_bit_a_round_to_min_bits(min_bits):
  stage = adaptive_quantize(1e6, min_bits=min_bits, initial_bits=5)
  expected = [5, 4, 3, 2, 1, 1, 1] if min_bits == 1 else [5, 4, 3, 2, 2, 2, 2]
  assert _run_controller(stage, _gaussian((3, 100)), 6) == expected


@pytest.mark.parametrize("initial_bits", [1, 8])
def test_the_width_settles_at_the_smallest_that_meets_the_target(initial_bits):
  x = _gaussian((4, 500), seed=7)

  stage, _, _ = _codec()

  @jax.jit
  def distortion(bits):  # mean over 16 keys and the clients
    keys = jax.random.split(jax.random.key(11), 16)
    sides = jax.vmap(lambda k: jax.vmap(lambda xc: stage.encode(bits, xc, k, k).side)(x))(keys)
    return jnp.mean(sides.distortion)

  d3, d4 = float(distortion(jnp.int32(3))), float(distortion(jnp.int32(4)))
  target = math.sqrt(d3 * d4)  # 3 bits miss it, 4 bits meet it, by a factor ~2 each
  # The rule's premise: from 4 bits it predicts that 3 would miss.
  assert d4 * (15 / 7) ** 2 > target
  stage = adaptive_quantize(target, initial_bits=initial_bits, max_bits=8)
  widths = _run_controller(stage, x, 12, seed=initial_bits)
  first = widths.index(4)
  assert first == abs(initial_bits - 4)  # one bit a round, straight there
  assert set(widths[first:]) == {4}


def test_encode_under_jit_compiles_once_for_every_width():
  x, traces = _gaussian(64), []
  stage = adaptive_quantize(1e-2)

  @jax.jit
  def encode(state, x, key):
    traces.append(1)
    return stage.encode(state, x, key, key)

  encodings = {bits: encode(jnp.int32(bits), x, jax.random.key(0)) for bits in (2, 5, 8)}
  assert len(traces) == 1
  decode = jax.jit(lambda enc: stage.decode(jnp.int32(4), enc, _spec(x), None))
  for bits, enc in encodings.items():
    assert int(enc.side.stream.num_bits) == bits * 64
    assert np.abs(np.asarray(decode(enc) - x)).max() <= _step(x, bits) * (1 + 1e-5)
  assert decode._cache_size() == 1


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(target_vnmse=0.0),
    dict(target_vnmse=-1.0),
    dict(target_vnmse=float("nan")),
    dict(min_bits=0),
    dict(max_bits=17, initial_bits=4),
    dict(min_bits=5, initial_bits=4),
    dict(initial_bits=9, max_bits=8),
    dict(min_bits=3, max_bits=2, initial_bits=3),
    dict(initial_bits=4.0),
    dict(drop_margin=0.5),
  ],
)
def test_invalid_arguments_are_rejected(kwargs):
  kwargs = {"target_vnmse": 1e-2, **kwargs}
  with pytest.raises(ValueError):
    adaptive_quantize(**kwargs)


# Through an aggregator.


def test_through_encoded_mean_the_width_follows_the_controller():
  clients, n, target = 5, 300, 1e-3
  updates = {"w": _gaussian((clients, n), seed=3)}
  weights = jnp.ones((clients,), jnp.float32)
  stage = adaptive_quantize(target)
  aggregator = encoded_mean(stage, threshold=0)
  state = aggregator.init({"w": updates["w"][0]})
  apply = jax.jit(aggregator.apply)
  true_mean = np.asarray(jnp.mean(updates["w"], axis=0), np.float64)

  @jax.jit
  def controller(bits, key):
    sides = jax.vmap(lambda x, k: stage.encode(bits, x, k, k).side)(
      updates["w"], jax.random.split(key, clients)
    )
    return stage.update(bits, sides)

  widths, expected = [], []
  for t in range(5):
    bits = int(state[0][0])
    widths.append(bits)
    aggregate, state, measurements = apply(state, updates, weights, jax.random.key(t))
    # Independent unbiased errors: E||mean error||^2 = sum_c E||err_c||^2 / C^2, each
    # at most n s_c^2 / 4; twice that bound.
    bound = sum(n * _step(x, bits) ** 2 / 4 for x in updates["w"]) / clients**2
    assert np.sum((np.asarray(aggregate["w"], np.float64) - true_mean) ** 2) <= 2 * bound
    np.testing.assert_array_equal(measurements["uplink_bits"], bits * n + SIDE_BITS)
    np.testing.assert_array_equal(measurements["downlink_aux_bits"], 32)  # the width
    # What the controller decides from the clients' distortions at this width (own keys;
    # every decision below has a margin of about 2 over the target).
    expected.append(int(controller(jnp.int32(bits), jax.random.key(100 + t))))
  widths.append(int(state[0][0]))
  assert widths[1:] == expected
  assert widths == [4, 5, 6, 7, 7, 7]
