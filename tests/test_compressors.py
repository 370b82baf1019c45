"""State-of-the-art compressors: exact bits, exact round trips, unbiasedness, vNMSE.

Tolerances follow from the math: for an unbiased estimator, the mean of T encodings
errs by E||mean - x||^2 = tr(Cov) / T, and tr(Cov) is estimated from the same samples.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import aggregators as agg
from fedjax_compress.aggregators import entropy, lloyd, sparsify
from fedjax_compress.aggregators.rotation import padded_size

KEY = jax.random.key(0)


def _gaussian(d, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=d), jnp.float32)


def _coder(stage, x):
  """Jitted encode and decode of `x`'s spec, with explicit private and shared keys."""
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)
  encode = jax.jit(lambda x, key, shared: stage.encode(state, x, key, shared))
  decode = jax.jit(lambda enc, shared: stage.decode(state, enc, spec, shared))
  return encode, decode


def _decodes(stage, x, trials, *, vary):
  """`trials` decodes of x, each with fresh private keys or fresh shared keys."""
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)

  def one(k):
    key, shared = (k, KEY) if vary == "private" else (KEY, k)
    return stage.decode(state, stage.encode(state, x, key, shared), spec, shared)
  return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), trials))


def _vnmse(stage, x, seeds=4):
  """Mean ||x_hat - x||^2 / ||x||^2 over `seeds` pairs of keys, in one compiled call."""
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)

  def one(key, shared):
    x_hat = stage.decode(state, stage.encode(state, x, key, shared), spec, shared)
    return jnp.sum((x_hat - x)**2) / jnp.sum(x * x)
  keys = jax.random.split(jax.random.key(100), 2 * seeds).reshape(2, seeds)
  return float(jnp.mean(jax.jit(jax.vmap(one))(keys[0], keys[1])))


# Gaussian Lloyd-Max levels (Max, 1960).

def test_gaussian_lloyd_max_levels_match_the_tables():
  np.testing.assert_allclose(lloyd.gaussian_levels(1), [-math.sqrt(2 / math.pi),
                                                            math.sqrt(2 / math.pi)], rtol=1e-9)
  np.testing.assert_allclose(lloyd.gaussian_levels(2), [-1.5104, -0.4528, 0.4528, 1.5104],
                             atol=1e-4)
  for bits, distortion in [(1, 0.3634), (2, 0.1175), (3, 0.03455), (4, 0.009497)]:
    assert lloyd.gaussian_distortion(bits) == pytest.approx(distortion, rel=1e-3)


# Exact bits: the arrays produced, and the analytic formula.

D = 1000  # not a power of two: rotations pad to 1024
N = padded_size(D)
WORDS = lambda bits, n: math.ceil(bits * n / 32) * 32


@pytest.mark.parametrize("stage, bits", [
    (agg.drive(), WORDS(1, N) + 32),
    (agg.drive(unbiased=False), WORDS(1, N) + 32),
    (agg.eden(1), WORDS(1, N) + 32),
    (agg.eden(3), WORDS(3, N) + 32),
    (agg.qsgd(7, bucket_size=256), WORDS(4, D) + 32 * 4),
    (agg.qsgd(1, bucket_size=D), WORDS(2, D) + 32),
    (agg.terngrad(), WORDS(2, D) + 32),
    (agg.scaled_sign(), WORDS(1, D) + 32),
    (agg.top_k(50), 50 * 32 + WORDS(10, 50)),
    (agg.top_k(fraction=0.1), 100 * 32 + WORDS(10, 100)),
    (agg.rand_k(fraction=0.25), 250 * 32),
    (agg.dithered(5), WORDS(5, D) + 64),
    (agg.lloyd_max(3), WORDS(3, D) + 8 * 32),
])
def test_bits_are_the_payload_produced_and_the_formula(stage, bits):
  x = _gaussian(D)
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)
  # Shapes only (no compilation): bits are static for every stage without a stream.
  enc = jax.eval_shape(lambda x: stage.encode(state, x, KEY, KEY), x)
  assert agg.payload_bits(enc) == bits
  assert jax.eval_shape(agg.measured_bits, enc).shape == ()
  assert jax.eval_shape(lambda e: stage.decode(state, e, spec, KEY), enc) == spec


def test_top_k_keeps_the_largest_values_with_indices_beyond_16_bits():
  d, k = 70_000, 40  # indices need 17 bits: packed as a 16-bit and a 1-bit array
  x = _gaussian(d, seed=5)
  encode, decode = _coder(agg.top_k(k), x)
  enc = encode(x, KEY, KEY)
  assert agg.payload_bits(enc) == 32 * k + WORDS(16, k) + WORDS(1, k)
  keep = np.argsort(-np.abs(np.asarray(x)))[:k]
  expected = np.zeros(d, np.float32)
  expected[keep] = np.asarray(x)[keep]
  np.testing.assert_array_equal(decode(enc, KEY), expected)


# Unbiasedness.

UNBIASED = [
    ("drive", agg.drive(), "shared"),
    ("eden2", agg.eden(2), "shared"),
    ("eden4", agg.eden(4), "shared"),
    ("qsgd", agg.qsgd(3, bucket_size=128), "private"),
    ("terngrad", agg.terngrad(), "private"),
    ("rand_k", agg.rand_k(fraction=0.1), "shared"),
    ("dithered", agg.dithered(3), "shared"),
]


@pytest.mark.parametrize("name, stage, vary", UNBIASED, ids=[u[0] for u in UNBIASED])
def test_unbiased_compressors_average_to_the_input(name, stage, vary):
  x = _gaussian(512, seed=2)
  trials = 2000
  decoded = _decodes(stage, x, trials, vary=vary)
  mean = decoded.mean(0)
  trace = float(jnp.sum(jnp.var(decoded, axis=0)))  # tr(Cov) of one encoding
  err = float(jnp.sum((mean - x)**2))
  # Unbiased: err ~ trace / T, a sum of 512 squared errors (relative spread ~6%);
  # a bias b would add ||b||^2. 1.5 is far outside the spread.
  assert err <= 1.5 * trace / trials, (err, trace / trials)
  assert err >= 0.5 * trace / trials


@pytest.mark.parametrize("stage, vary, bound", [
    # Per value: QSGD (norm/s)^2/4, TernGrad |x|(max - |x|), rand-k (d/k - 1) x^2,
    # dithered D^2/12 exactly, D = 2 max|x| / (2^bits - 1).
    (agg.qsgd(3, bucket_size=512), "private", lambda x: float(jnp.sum(x * x)) * 512 / 9 / 4),
    (agg.terngrad(), "private",
     lambda x: float(jnp.sum(jnp.abs(x) * (jnp.max(jnp.abs(x)) - jnp.abs(x))))),
    (agg.rand_k(fraction=0.1), "shared", lambda x: float((1 / 0.1 - 1) * jnp.sum(x * x))),
    (agg.dithered(3), "shared", lambda x: 512 * (2 * float(jnp.max(jnp.abs(x))) / 7)**2 / 12),
], ids=["qsgd", "terngrad", "rand_k", "dithered"])
def test_variance_is_within_the_derived_bound(stage, vary, bound):
  x = _gaussian(512, seed=3)
  decoded = _decodes(stage, x, 1000, vary=vary)
  mse = float(jnp.mean(jnp.sum((decoded - x)**2, axis=1)))
  # 1000 trials of a sum of 512 terms: the mean is within a few percent of its expectation.
  assert mse <= 1.1 * bound(x)


def test_rand_k_indices_are_distinct_and_each_equally_likely():
  d, kept, trials = 50, 10, 4000
  draw = jax.jit(jax.vmap(lambda key: sparsify.random_indices(key, d, kept)))
  idx = np.asarray(draw(jax.random.split(KEY, trials)))
  assert all(len(set(row)) == kept for row in idx) and idx.min() >= 0 and idx.max() < d
  # Each index in a sample with probability kept / d: counts ~ Binomial(trials, 0.2),
  # standard deviation 25; a lean toward low indices (ties broken by index) would show.
  counts = np.bincount(idx.ravel(), minlength=d)
  assert np.abs(counts - trials * kept / d).max() < 5 * math.sqrt(trials * 0.2 * 0.8)


def test_rand_k_indices_name_a_count_out_of_range():
  for kept in (0, 51):
    with pytest.raises(ValueError, match=f"kept={kept} of d=50"):
      sparsify.random_indices(KEY, 50, kept)


def test_dithered_error_is_uniform_and_independent_of_the_input():
  x = jnp.linspace(-1.0, 1.0, 4096)
  stage = agg.dithered(4)
  encode, decode = _coder(stage, x)
  err = np.asarray(decode(encode(x, KEY, KEY), KEY) - x)
  step = 2.0 / 15
  assert np.abs(err).max() <= step / 2 * (1 + 1e-5)
  # Uniform on (-step/2, step/2]: mean 0, variance step^2/12, for every part of the range.
  for part in np.split(err, 4):
    assert abs(part.mean()) < 4 * step / math.sqrt(12 * part.size)
    assert part.var() == pytest.approx(step**2 / 12, rel=0.15)


# vNMSE against the references (Gaussian; the d = 2^16 values hold at 2^12 within 10%).

@pytest.mark.parametrize("stage, reference", [
    (agg.drive(), 0.571),
    (agg.eden(1), 0.571),
    (agg.eden(2), 0.133),
    (agg.eden(4), 0.0096),
], ids=["drive", "eden1", "eden2", "eden4"])
def test_drive_and_eden_reach_the_reference_vnmse(stage, reference):
  assert _vnmse(stage, _gaussian(2**12)) == pytest.approx(reference, rel=0.10)


def test_biased_variants_trade_bias_for_error():
  x = _gaussian(2**12)
  # DRIVE's MSE-optimal scale: 1 - 2/pi. Scaled sign without rotation on Gaussian data alike.
  assert _vnmse(agg.drive(unbiased=False), x) == pytest.approx(1 - 2 / math.pi, rel=0.05)
  assert _vnmse(agg.scaled_sign(), x) == pytest.approx(1 - 2 / math.pi, rel=0.05)
  # Lloyd's iteration never increases the distortion of its starting (Gaussian) levels.
  fitted = _vnmse(agg.lloyd_max(4, iterations=10), x)
  assert fitted <= _vnmse(agg.lloyd_max(4, iterations=0), x) * (1 + 1e-4)
  assert fitted == pytest.approx(lloyd.gaussian_distortion(4), rel=0.15)
  # Top-k errs by exactly the energy of the values it drops.
  tail = np.sort(np.asarray(x)**2)[:-400].sum() / float(jnp.sum(x * x))
  assert _vnmse(agg.top_k(400), x) == pytest.approx(tail, rel=1e-5)


# Entropy coding: a real Huffman bitstream.

@pytest.mark.parametrize("symbols, bits", [
    (np.full(100, 7), 4),  # one symbol
    (np.array([3]), 2),
    (np.random.default_rng(0).integers(0, 8, 999), 3),  # uniform: raw is as short
    (np.clip(np.random.default_rng(1).normal(size=5000) * 4 + 128, 0, 255).astype(int), 8),
    (np.random.default_rng(2).geometric(0.3, 3000), 16),
], ids=["constant", "single", "uniform", "gaussian", "geometric16"])
def test_huffman_stream_round_trips_and_its_length_is_the_code(symbols, bits):
  stream = entropy.encode_stream(symbols, bits)
  np.testing.assert_array_equal(entropy.decode_stream(stream, symbols.size, bits), symbols)
  assert stream.size <= 1 + bits * symbols.size  # never longer than raw
  if stream[0] == 1:  # Huffman: the header, then one codeword per symbol
    lo, hi = symbols.min(), symbols.max()
    lengths = entropy.huffman_lengths(np.bincount(symbols - lo, minlength=hi - lo + 1))
    header = 1 + 2 * bits + entropy.LENGTH_BITS * (hi - lo + 1)
    assert stream.size == header + lengths[symbols - lo].sum()
    used = lengths[lengths > 0]
    assert used.size == 1 or np.sum(2.0**-used) == 1.0  # Kraft: a complete prefix code
    # Huffman: within 1 bit of the entropy per symbol.
    p = np.bincount(symbols - lo) / symbols.size
    p = p[p > 0]
    assert lengths[symbols - lo].mean() <= -np.sum(p * np.log2(p)) + 1


@pytest.mark.parametrize("bits", [1, 2, 5, 6])  # compared with every midpoint; searched
def test_nearest_level_is_the_closest_level(bits):
  levels = jnp.asarray(lloyd.gaussian_levels(bits), jnp.float32)
  x = jnp.concatenate([_gaussian(5000, seed=bits) * 1.5, (levels[1:] + levels[:-1]) / 2 + 1e-6])
  found = np.asarray(jax.jit(lloyd.nearest_level)(x, levels))
  distance = np.abs(np.asarray(x)[:, None] - np.asarray(levels)[None])
  np.testing.assert_array_equal(distance[np.arange(x.size), found], distance.min(axis=1))


def test_entropy_stage_names_packed_or_wider_codes_and_the_fix():
  x = jax.random.normal(KEY, (4096,))
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  # Declared stages are refused when chained, naming both and the fix.
  with pytest.raises(ValueError, match=r"packed uint32 words; use .*quantize_codes"):
    agg.chain(agg.uniform_quantize(4), agg.entropy_code(4))
  with pytest.raises(ValueError, match=r"codes of 8 bits; give both the same bits"):
    agg.chain(agg.quantize_codes(8), agg.entropy_code(4))
  # Undeclared ones (a custom stage) are caught when the codes arrive.
  for before in (agg.uniform_quantize(4), agg.quantize_codes(8)):  # packed words; 8 bits
    stage = agg.chain(before._replace(emits=agg.ANY), agg.entropy_code(4))
    with pytest.raises(Exception, match=r"outside 0\.\.15.*quantize_codes\(4\)"):
      jax.block_until_ready(jax.jit(lambda x: stage.encode(stage.init(spec), x, KEY, KEY))(x))
  with pytest.raises(ValueError, match="integer codes; got float32"):
    agg.entropy_code(4).encode((), x, KEY, KEY)


def test_entropy_stage_is_lossless_inside_jit_and_vmap_and_counts_the_stream():
  x = jax.random.normal(KEY, (3, 2048))
  coded = agg.chain(agg.dithered_codes(8, step=0.26), agg.entropy_code(8))
  packed = agg.dithered(8, step=0.26)
  spec = jax.ShapeDtypeStruct((2048,), jnp.float32)

  def run(stage, x):
    enc = jax.vmap(lambda x: stage.encode(stage.init(spec), x, KEY, KEY))(x)
    dec = jax.vmap(lambda e: stage.decode(stage.init(spec), e, spec, KEY))(enc)
    return enc, dec, jax.vmap(agg.measured_bits)(enc)

  run = jax.jit(run, static_argnums=0)
  enc, dec, bits = run(coded, x)
  _, reference, _ = run(packed, x)
  np.testing.assert_array_equal(dec, reference)  # lossless: the same as fixed-width codes
  stream = enc.side[1]
  np.testing.assert_array_equal(bits, stream.num_bits + 64)  # stream + m and the step
  # Step 0.26 RMS: ~4 bits of entropy (h(N(0,1)) - log2 0.26 = 3.99), Huffman ~0.05 more.
  per_value = (np.asarray(stream.num_bits) - 1 - 16 - 5 * 40) / 2048
  assert np.all((per_value > 3.8) & (per_value < 4.2))
  assert np.all(np.asarray(bits) <= agg.payload_bits(jax.tree.map(lambda a: a[0], enc)))


def test_new_stages_work_in_encoded_mean_and_by_name():
  rng = np.random.default_rng(0)
  updates = {"w": jnp.asarray(rng.normal(size=(4, 30, 40)), jnp.float32)}
  weights = jnp.ones(4)
  true = updates["w"].mean(0)
  for spec in ["eden(bits=4)", "hadamard,dithered_codes(bits=8,step=0.1),entropy_code(bits=8)"]:
    aggregator = agg.encoded_mean(agg.parse_stages(spec), weighted=False)
    state = aggregator.init(jax.tree.map(lambda x: x[0], updates))
    out, _, m = jax.jit(aggregator.apply)(state, updates, weights, KEY)
    rel = float(jnp.sum((out["w"] - true)**2) / jnp.sum(true**2))
    assert rel < 1.0, spec  # each is noisy, but none is garbage
    assert int(m[agg.UPLINK_BITS][0]) > 0


def test_encoded_sum_counts_entropy_coded_streams_at_their_length():
  """The aggregator's uplink bits are the streams' measured lengths, not their capacity."""
  n = 4096
  rng = np.random.default_rng(0)
  # Peaked data: Huffman codes it in far fewer than 8 bits per value.
  updates = {"w": jnp.asarray(rng.laplace(size=(3, n)) * 0.01, jnp.float32)}
  stage = agg.chain(agg.quantize_codes(8, stochastic=False), agg.entropy_code(8))
  aggregator = agg.encoded_sum(stage)
  state = aggregator.init(jax.tree.map(lambda u: u[0], updates))
  _, _, m = jax.jit(aggregator.apply)(state, updates, jnp.ones(3), jax.random.key(0))
  spec = jax.ShapeDtypeStruct((n,), jnp.float32)
  chained = agg.chain(stage)
  expected = []
  for c in range(3):
    enc = chained.encode(chained.init(spec), updates["w"][c], jax.random.key(1), jax.random.key(2))
    expected.append(int(agg.measured_bits(enc)))
  np.testing.assert_array_equal(m[agg.UPLINK_BITS], expected)
  assert max(expected) < 8 * n  # shorter than fixed-width codes
