"""State-of-the-art compressors side by side: exact bits, unbiasedness, variance, vNMSE.

Each stage's own behaviour is tested in the file named after its module
(test_top_k.py, test_entropy_code.py, ...). Tolerances follow from the math: for an unbiased estimator, the mean of T encodings
errs by E||mean - x||^2 = tr(Cov) / T, and tr(Cov) is estimated from the same samples.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import aggregators as agg
from fedjax_compress import compression
from fedjax_compress.compression.hadamard import padded_size
from fedjax_compress.compression.lloyd_max import gaussian_distortion
from tests.compression.stage_helpers import KEY, gaussian


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
    return jnp.sum((x_hat - x) ** 2) / jnp.sum(x * x)

  keys = jax.random.split(jax.random.key(100), 2 * seeds).reshape(2, seeds)
  return float(jnp.mean(jax.jit(jax.vmap(one))(keys[0], keys[1])))


# Exact bits: the arrays produced, and the analytic formula.

D = 1000  # not a power of two: rotations pad to 1024
N = padded_size(D)
WORDS = lambda bits, n: math.ceil(bits * n / 32) * 32


@pytest.mark.parametrize(
  "stage, bits",
  [
    (compression.drive(), WORDS(1, N) + 32),
    (compression.drive(unbiased=False), WORDS(1, N) + 32),
    (compression.eden(1), WORDS(1, N) + 32),
    (compression.eden(3), WORDS(3, N) + 32),
    (compression.qsgd(7, bucket_size=256), WORDS(4, D) + 32 * 4),
    (compression.qsgd(1, bucket_size=D), WORDS(2, D) + 32),
    (compression.terngrad(), WORDS(2, D) + 32),
    (compression.scaled_sign(), WORDS(1, D) + 32),
    (compression.top_k(50), 50 * 32 + WORDS(10, 50)),
    (compression.top_k(fraction=0.1), 100 * 32 + WORDS(10, 100)),
    (compression.rand_k(fraction=0.25), 250 * 32),
    (compression.dithered(5), WORDS(5, D) + 64),
    (compression.lloyd_max(3), WORDS(3, D) + 8 * 32),
  ],
)
def test_bits_are_the_payload_produced_and_the_formula(stage, bits):
  x = gaussian(D)
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)
  # Shapes only (no compilation): bits are static for every stage without a stream.
  enc = jax.eval_shape(lambda x: stage.encode(state, x, KEY, KEY), x)
  assert agg.payload_bits(enc) == bits
  assert jax.eval_shape(agg.measured_bits, enc).shape == ()
  assert jax.eval_shape(lambda e: stage.decode(state, e, spec, KEY), enc) == spec


# Unbiasedness.

UNBIASED = [
  ("drive", compression.drive(), "shared"),
  ("eden2", compression.eden(2), "shared"),
  ("eden4", compression.eden(4), "shared"),
  ("qsgd", compression.qsgd(3, bucket_size=128), "private"),
  ("terngrad", compression.terngrad(), "private"),
  ("rand_k", compression.rand_k(fraction=0.1), "shared"),
  ("dithered", compression.dithered(3), "shared"),
]


@pytest.mark.parametrize("name, stage, vary", UNBIASED, ids=[u[0] for u in UNBIASED])
def test_unbiased_compressors_average_to_the_input(name, stage, vary):
  x = gaussian(512, seed=2)
  trials = 2000
  decoded = _decodes(stage, x, trials, vary=vary)
  mean = decoded.mean(0)
  trace = float(jnp.sum(jnp.var(decoded, axis=0)))  # tr(Cov) of one encoding
  err = float(jnp.sum((mean - x) ** 2))
  # Unbiased: err ~ trace / T, a sum of 512 squared errors (relative spread ~6%);
  # a bias b would add ||b||^2. 1.5 is far outside the spread.
  assert err <= 1.5 * trace / trials, (err, trace / trials)
  assert err >= 0.5 * trace / trials


@pytest.mark.parametrize(
  "stage, vary, bound",
  [
    # Per value: QSGD (norm/s)^2/4, TernGrad |x|(max - |x|), rand-k (d/k - 1) x^2,
    # dithered D^2/12 exactly, D = 2 max|x| / (2^bits - 1).
    (
      compression.qsgd(3, bucket_size=512),
      "private",
      lambda x: float(jnp.sum(x * x)) * 512 / 9 / 4,
    ),
    (
      compression.terngrad(),
      "private",
      lambda x: float(jnp.sum(jnp.abs(x) * (jnp.max(jnp.abs(x)) - jnp.abs(x)))),
    ),
    (compression.rand_k(fraction=0.1), "shared", lambda x: float((1 / 0.1 - 1) * jnp.sum(x * x))),
    (
      compression.dithered(3),
      "shared",
      lambda x: 512 * (2 * float(jnp.max(jnp.abs(x))) / 7) ** 2 / 12,
    ),
  ],
  ids=["qsgd", "terngrad", "rand_k", "dithered"],
)
def test_variance_is_within_the_derived_bound(stage, vary, bound):
  x = gaussian(512, seed=3)
  decoded = _decodes(stage, x, 1000, vary=vary)
  mse = float(jnp.mean(jnp.sum((decoded - x) ** 2, axis=1)))
  # 1000 trials of a sum of 512 terms: the mean is within a few percent of its expectation.
  assert mse <= 1.1 * bound(x)


# vNMSE against the references (Gaussian; the d = 2^16 values hold at 2^12 within 10%).


@pytest.mark.parametrize(
  "stage, reference",
  [
    (compression.drive(), 0.571),
    (compression.eden(1), 0.571),
    (compression.eden(2), 0.133),
    (compression.eden(4), 0.0096),
  ],
  ids=["drive", "eden1", "eden2", "eden4"],
)
def test_drive_and_eden_reach_the_reference_vnmse(stage, reference):
  assert _vnmse(stage, gaussian(2**12)) == pytest.approx(reference, rel=0.10)


def test_biased_variants_trade_bias_for_error():
  x = gaussian(2**12)
  # DRIVE's MSE-optimal scale: 1 - 2/pi. Scaled sign without rotation on Gaussian data alike.
  assert _vnmse(compression.drive(unbiased=False), x) == pytest.approx(1 - 2 / math.pi, rel=0.05)
  assert _vnmse(compression.scaled_sign(), x) == pytest.approx(1 - 2 / math.pi, rel=0.05)
  # Lloyd's iteration never increases the distortion of its starting (Gaussian) levels.
  fitted = _vnmse(compression.lloyd_max(4, iterations=10), x)
  assert fitted <= _vnmse(compression.lloyd_max(4, iterations=0), x) * (1 + 1e-4)
  assert fitted == pytest.approx(gaussian_distortion(4), rel=0.15)
  # Top-k errs by exactly the energy of the values it drops.
  tail = np.sort(np.asarray(x) ** 2)[:-400].sum() / float(jnp.sum(x * x))
  assert _vnmse(compression.top_k(400), x) == pytest.approx(tail, rel=1e-5)


def test_new_stages_work_in_encoded_mean_and_by_name():
  rng = np.random.default_rng(0)
  updates = {"w": jnp.asarray(rng.normal(size=(4, 30, 40)), jnp.float32)}
  weights = jnp.ones(4)
  true = updates["w"].mean(0)
  for spec in ["eden(bits=4)", "hadamard,dithered_codes(bits=8,step=0.1),entropy_code(bits=8)"]:
    aggregator = agg.encoded_mean(agg.parse_stages(spec), weighted=False)
    state = aggregator.init(jax.tree.map(lambda x: x[0], updates))
    out, _, m = jax.jit(aggregator.apply)(state, updates, weights, KEY)
    rel = float(jnp.sum((out["w"] - true) ** 2) / jnp.sum(true**2))
    assert rel < 1.0, spec  # each is noisy, but none is garbage
    assert int(m[agg.UPLINK_BITS][0]) > 0
