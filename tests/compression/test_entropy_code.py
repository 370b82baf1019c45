"""entropy_code.py: lossless Huffman coding of codes into a real bitstream."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import aggregators as agg
from fedjax_compress import compression
from fedjax_compress.compression.entropy_code import (
  LENGTH_BITS,
  decode_stream,
  encode_stream,
  huffman_lengths,
)
from tests.compression.stage_helpers import KEY


@pytest.mark.parametrize(
  "symbols, bits",
  [
    (np.full(100, 7), 4),  # one symbol
    (np.array([3]), 2),
    (np.random.default_rng(0).integers(0, 8, 999), 3),  # uniform: raw is as short
    (np.clip(np.random.default_rng(1).normal(size=5000) * 4 + 128, 0, 255).astype(int), 8),
    (np.random.default_rng(2).geometric(0.3, 3000), 16),
  ],
  ids=["constant", "single", "uniform", "gaussian", "geometric16"],
)
def test_huffman_stream_round_trips_and_its_length_is_the_code(symbols, bits):
  stream = encode_stream(symbols, bits)
  np.testing.assert_array_equal(decode_stream(stream, symbols.size, bits), symbols)
  assert stream.size <= 1 + bits * symbols.size  # never longer than raw
  if stream[0] == 1:  # Huffman: the header, then one codeword per symbol
    lo, hi = symbols.min(), symbols.max()
    lengths = huffman_lengths(np.bincount(symbols - lo, minlength=hi - lo + 1))
    header = 1 + 2 * bits + LENGTH_BITS * (hi - lo + 1)
    assert stream.size == header + lengths[symbols - lo].sum()
    used = lengths[lengths > 0]
    assert used.size == 1 or np.sum(2.0**-used) == 1.0  # Kraft: a complete prefix code
    # Huffman: within 1 bit of the entropy per symbol.
    p = np.bincount(symbols - lo) / symbols.size
    p = p[p > 0]
    assert lengths[symbols - lo].mean() <= -np.sum(p * np.log2(p)) + 1


def test_entropy_stage_names_packed_or_wider_codes_and_the_fix():
  x = jax.random.normal(KEY, (4096,))
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  # Declared stages are refused when chained, naming both and the fix.
  with pytest.raises(ValueError, match=r"packed uint32 words; use .*quantize_codes"):
    compression.chain(compression.uniform_quantize(4), compression.entropy_code(4))
  with pytest.raises(ValueError, match=r"codes of 8 bits; give both the same bits"):
    compression.chain(compression.quantize_codes(8), compression.entropy_code(4))
  # Undeclared ones (a custom stage) are caught when the codes arrive: packed words, and
  # codes of 8 bits.
  for before in (compression.uniform_quantize(4), compression.quantize_codes(8)):
    stage = compression.chain(before._replace(emits=compression.ANY), compression.entropy_code(4))
    with pytest.raises(Exception, match=r"outside 0\.\.15.*quantize_codes\(4\)"):
      jax.block_until_ready(jax.jit(lambda x: stage.encode(stage.init(spec), x, KEY, KEY))(x))
  with pytest.raises(ValueError, match="integer codes; got float32"):
    compression.entropy_code(4).encode((), x, KEY, KEY)


def test_entropy_stage_is_lossless_inside_jit_and_vmap_and_counts_the_stream():
  x = jax.random.normal(KEY, (3, 2048))
  coded = compression.chain(compression.dithered_codes(8, step=0.26), compression.entropy_code(8))
  packed = compression.dithered(8, step=0.26)
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
