"""Z_{2^b} arithmetic and the modular (secure-aggregation) sum, privacy/modular.py."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import aggregators as agg
from fedjax_compress import compression
from fedjax_compress.privacy import modular
from fedjax_compress.privacy.modular import modular_sum, modular_wrap, unwrap, wrap


def _np_wrap(x, bits):
  return (np.asarray(x, np.int64) % 2**bits).astype(np.uint32)


def _np_centered(x, bits):
  """x mod 2^bits in [-2^(bits-1), 2^(bits-1)), computed in int64."""
  half = 2 ** (bits - 1)
  return (np.asarray(x, np.int64) + half) % 2**bits - half


def _ints(seed, shape, lo=-(2**31), hi=2**31):
  return np.random.default_rng(seed).integers(lo, hi, shape, dtype=np.int64).astype(np.int32)


@pytest.mark.parametrize("bits", range(1, 33))
def test_wrap_and_unwrap_match_numpy(bits):
  x = np.concatenate(
    [_ints(bits, 500), [0, 1, -1, 2**31 - 1, -(2**31), 2 ** (bits - 1) - 1, -(2 ** (bits - 1))]]
  ).astype(np.int32)
  w = wrap(jnp.asarray(x), bits)
  assert w.dtype == jnp.uint32
  np.testing.assert_array_equal(w, _np_wrap(x, bits))
  u = unwrap(w, bits)
  assert u.dtype == jnp.int32
  np.testing.assert_array_equal(u, _np_centered(x, bits))
  # Values in the centered range come back exactly.
  inside = np.clip(x, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype(np.int32)
  np.testing.assert_array_equal(unwrap(wrap(jnp.asarray(inside), bits), bits), inside)


def test_wrap_takes_integers_of_any_width():
  np.testing.assert_array_equal(wrap(jnp.asarray([-3, 100], jnp.int8), 8), [253, 100])
  np.testing.assert_array_equal(wrap(jnp.asarray([65535, 7], jnp.uint16), 4), [15, 7])
  np.testing.assert_array_equal(unwrap(jnp.asarray([255, 1], jnp.uint8), 8), [-1, 1])
  np.testing.assert_array_equal(unwrap(jnp.asarray([1, 0], jnp.uint32), 1), [-1, 0])
  with pytest.raises(ValueError, match="wrap: the values are bool"):
    wrap(jnp.asarray([True]), 4)


@pytest.mark.slow
def test_64_bit_integers_wrap_modulo_2_to_the_b():
  # Under jax_enable_x64 integer updates are int64; to uint32 is modular there too.
  script = (
    "import jax, jax.numpy as jnp, numpy as np\n"
    "from fedjax_compress.privacy import modular\n"
    "x = np.array([-1, -2**40 - 3, 2**40 + 5, 2**63 - 1, -2**63, 77], np.int64)\n"
    "for b in (1, 5, 16, 32):\n"
    "  w = modular.wrap(jnp.asarray(x), b)\n"
    "  assert (np.asarray(w) == x % 2**b).all(), b\n"
    "  u = modular.unwrap(w, b)\n"
    "  assert (np.asarray(u) == (x + 2**(b - 1)) % 2**b - 2**(b - 1)).all(), b\n"
    "t, _, m = modular.modular_sum(8).apply((), jnp.asarray([[1, -200], [3, 4]]),\n"
    "                                        jnp.ones(2), jax.random.key(0))\n"
    "assert t.dtype == jnp.int32 and (np.asarray(t) == [4, 60]).all(), t\n"
    "print('ok')\n"
  )
  env = {**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("bits", [0, 33, -1, 8.0, True, "8", None])
def test_out_of_range_bits_are_refused(bits):
  for call in (
    lambda: wrap(jnp.zeros(2, jnp.int32), bits),
    lambda: unwrap(jnp.zeros(2, jnp.uint32), bits),
    lambda: modular_sum(bits),
    lambda: modular_wrap(bits),
  ):
    with pytest.raises(ValueError, match=r"bits=.* is invalid: it must be an int in 1\.\.32"):
      call()


def test_floats_are_refused_naming_the_leaf():
  with pytest.raises(ValueError, match="wrap: the values are float32"):
    wrap(jnp.zeros(3), 8)
  aggregator = modular_sum(8)
  updates = {"w": jnp.zeros((2, 3), jnp.int32), "b": jnp.zeros((2,), jnp.float32)}
  with pytest.raises(
    ValueError,
    match=r"modular_sum\(bits=8\): the values of leaf \['b'\] "
    r"are float32.*randomized_round",
  ):
    aggregator.apply((), updates, jnp.ones(2), jax.random.key(0))


def _apply(aggregator, updates, key=None):
  template = jax.tree.map(lambda x: x[0], updates)
  state = aggregator.init(template)
  num = jax.tree.leaves(updates)[0].shape[0]
  return aggregator.apply(state, updates, jnp.ones(num), key or jax.random.key(0))


def test_modular_sum_is_the_integer_sum_when_nothing_wraps():
  bits = 12
  updates = {
    "w": jnp.asarray(_ints(0, (7, 5, 3), -200, 200)),
    "b": jnp.asarray(_ints(1, (7, 4), -200, 200)),
  }
  total, state, measurements = _apply(modular_sum(bits), updates)
  for name in updates:
    assert total[name].dtype == jnp.int32
    np.testing.assert_array_equal(total[name], np.asarray(updates[name]).sum(axis=0))
  assert state == ()
  # b bits per coordinate of each client's update, nothing else.
  np.testing.assert_array_equal(measurements[agg.UPLINK_BITS], [bits * (15 + 4)] * 7)
  assert not np.any(np.asarray(measurements[agg.UPLINK_AUX_BITS]))
  assert not np.any(np.asarray(measurements[agg.DOWNLINK_AUX_BITS]))
  assert set(measurements) >= set(agg.BIT_KEYS)


@pytest.mark.parametrize("bits", [1, 3, 8, 16, 20, 31, 32])
def test_modular_sum_wraps_exactly_as_the_group(bits):
  x = _ints(bits, (9, 64))  # full int32 range: sums wrap at every b
  total, _, measurements = jax.jit(lambda u: _apply(modular_sum(bits), u))(jnp.asarray(x))
  expected = _np_centered(x.astype(np.int64).sum(axis=0), bits)
  np.testing.assert_array_equal(total, expected)
  np.testing.assert_array_equal(measurements[agg.UPLINK_BITS], [bits * 64] * 9)


def test_modular_sum_streams_in_chunks():
  bits = 10
  x = jnp.asarray(_ints(3, (10, 6, 2), -600, 600))
  aggregator = modular_sum(bits)
  spec = jax.ShapeDtypeStruct((6, 2), jnp.int32)
  state = aggregator.init(spec)
  partial = aggregator.start(state, spec, 10)
  assert isinstance(partial, modular.ModularPartial)
  key = jax.random.key(0)
  for lo, hi in ((0, 3), (3, 4), (4, 10)):  # uneven chunks
    clients = agg.Clients(jnp.arange(lo, hi, dtype=jnp.int32))
    partial, client_states = aggregator.accumulate(
      state, partial, x[lo:hi], jnp.ones(hi - lo), clients, key
    )
    assert client_states == ()
  chunked, _, chunked_bits = aggregator.finish(state, partial, spec, key)
  whole, _, whole_bits = aggregator.apply(state, x, jnp.ones(10), key)
  np.testing.assert_array_equal(chunked, whole)
  np.testing.assert_array_equal(whole, _np_centered(np.asarray(x, np.int64).sum(axis=0), bits))
  for k in agg.BIT_KEYS:
    np.testing.assert_array_equal(chunked_bits[k], whole_bits[k])
  # A client not yet accumulated has sent nothing.
  partial = aggregator.accumulate(
    state,
    aggregator.start(state, spec, 10),
    x[:2],
    jnp.ones(2),
    agg.Clients(jnp.arange(2, dtype=jnp.int32)),
    key,
  )[0]
  _, _, bits_so_far = aggregator.finish(state, partial, spec, key)
  np.testing.assert_array_equal(bits_so_far[agg.UPLINK_BITS], [120, 120] + [0] * 8)


def test_modular_sum_bits_equal_the_wire_size_of_the_group_elements():
  # The uint32 words in memory are a container: b bits of each travel, as the protocol
  # sends Z_{2^b} elements; 32 bits only at b = 32.
  x = jnp.asarray(_ints(4, (3, 100), -5, 5))
  for bits in (1, 7, 32):
    _, _, m = _apply(modular_sum(bits), x)
    np.testing.assert_array_equal(m[agg.UPLINK_BITS], [bits * 100] * 3)
  assert agg.payload_bits(wrap(x[0], 32)) == 32 * 100


def test_modular_sum_weights_are_ignored():
  x = jnp.asarray(_ints(5, (4, 3), -9, 9))
  aggregator = modular_sum(8)
  a = aggregator.apply((), x, jnp.ones(4), jax.random.key(0))[0]
  b = aggregator.apply((), x, jnp.asarray([0.0, 2.0, 3.0, 0.5]), jax.random.key(0))[0]
  np.testing.assert_array_equal(a, b)


def test_modular_sum_refuses_a_payload_over_the_bit_counter():
  aggregator = modular_sum(32)
  with pytest.raises(ValueError, match="exceeds the int32 bit counter"):
    aggregator.start((), jax.ShapeDtypeStruct((2**26,), jnp.int32), 2)


@pytest.mark.parametrize(
  "bits, container_bits", [(4, 8), (8, 8), (12, 16), (16, 16), (24, 32), (32, 32)]
)
def test_modular_wrap_stage_in_encoded_sum(bits, container_bits):
  stage = modular_wrap(bits)
  assert stage.commutes_with_sum and stage.name == f"modular_wrap(bits={bits})"
  assert stage.emits == compression.codes_kind(bits)
  x = jnp.asarray(_ints(bits, (6, 40)))
  total, _, m = _apply(agg.encoded_sum(stage), x)
  np.testing.assert_array_equal(total, _np_centered(np.asarray(x, np.int64).sum(axis=0), bits))
  # encoded_sum counts the container: exact at 8, 16, 32 bits.
  np.testing.assert_array_equal(m[agg.UPLINK_BITS], [container_bits * 40] * 6)
  # Encode and decode of one tensor.
  key = jax.random.key(0)
  small = jnp.asarray([-(2 ** (bits - 1)), -1, 0, 1, 2 ** (bits - 1) - 1], jnp.int32)
  enc = stage.encode((), small, key, key)
  assert enc.values.dtype == modular.container_dtype(bits) and enc.side == ()
  np.testing.assert_array_equal(
    stage.decode((), enc, jax.ShapeDtypeStruct(small.shape, jnp.int32), key), small
  )


def test_modular_wrap_refuses_floats_and_float_stages_before_it():
  stage = modular_wrap(8)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"modular_wrap\(bits=8\): the values are float32"):
    stage.encode((), jnp.zeros(3), key, key)
  with pytest.raises(ValueError, match="hadamard takes float values"):
    compression.chain(stage, compression.hadamard())
