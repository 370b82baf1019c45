"""Lossless entropy coding of integer codes: canonical Huffman, as a real bitstream.

`entropy_code(bits)` replaces `bitpack(bits)` after a stage that emits codes in
0..2^bits - 1. It runs on the host in numpy, through `jax.pure_callback` (one client at
a time under `vmap`), so it works inside `jit` but costs a device-to-host round trip.
Its throughput is timed by `python -m benchmarks.dme` (benchmarks/RESULTS.md,
"Distributed mean estimation").

The stream (bit i is bit i % 32 of uint32 word i // 32; fields most significant bit
first): a flag bit; flag 0: the n codes raw at `bits` bits each (used when Huffman would
not be shorter); flag 1: lo and hi - lo (`bits` bits each), a 5-bit code length for
each symbol lo..hi (0: absent), then the n codewords. The code table travels inside the
stream, so the stream's length is all the encoding costs.

Variable length: the words are padded to a static capacity (raw size) and the stream's
true length travels beside them as `Stream.num_bits`, an int32 that is a measurement,
not payload (the decoder stops after n symbols; a transport frames the message anyway).
`measured_bits` counts a payload with streams at their true length (what `encoded_sum`
reports); `payload_bits` counts the capacity, a static upper bound.
"""

from __future__ import annotations

import heapq
import math

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_compress.compression.base import STREAM, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.bitpack import check_bits
from fedjax_compress.compression.bits import Stream
from fedjax_compress.compression.flat import num_values

LENGTH_BITS = 5  # the field of a code length in the header
# Longer codes would make the decoder's lookup table (2^longest entries) large; capping
# costs almost nothing (a code of 20 bits is for probabilities near 1e-6).
MAX_CODE_LENGTH = 20


# Host side: numpy.


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
  """Optimal prefix-code lengths for counts (0 for absent symbols), at most MAX_CODE_LENGTH."""
  counts = np.asarray(counts, np.int64)
  while True:
    lengths = _huffman_lengths(counts)
    if lengths.max(initial=0) <= MAX_CODE_LENGTH:
      return lengths
    # Halving the counts flattens the tree; rare (needs Fibonacci-like counts).
    counts = np.where(counts > 0, np.maximum(counts // 2, 1), 0)


def _huffman_lengths(counts):
  used = np.flatnonzero(counts)
  lengths = np.zeros(counts.size, np.int64)
  if used.size == 1:
    lengths[used] = 1
    return lengths
  heap = [(int(counts[s]), i) for i, s in enumerate(used)]
  heapq.heapify(heap)
  parent = [0] * (2 * used.size - 1)
  node = used.size
  while len(heap) > 1:
    (c1, a), (c2, b) = heapq.heappop(heap), heapq.heappop(heap)
    parent[a] = parent[b] = node
    heapq.heappush(heap, (c1 + c2, node))
    node += 1
  depth = [0] * node
  for i in range(node - 2, -1, -1):  # a parent's id is larger than its children's
    depth[i] = depth[parent[i]] + 1
  lengths[used] = depth[: used.size]
  return lengths


def canonical_codes(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Canonical codewords for code lengths, and the symbols in (length, symbol) order."""
  order = np.lexsort((np.arange(lengths.size), lengths))
  order = order[lengths[order] > 0]
  codes = np.zeros(lengths.size, np.int64)
  code, prev = 0, 0
  for s in order:
    code <<= int(lengths[s]) - prev
    codes[s], prev = code, int(lengths[s])
    code += 1
  return codes, order


def _fields(values, widths) -> np.ndarray:
  """Values as bits (uint8 0/1), each at its width, most significant bit first."""
  values = np.asarray(values, np.int64).ravel()
  widths = np.broadcast_to(np.asarray(widths, np.int32), values.shape)
  ends = np.cumsum(widths, dtype=np.int64)
  # Bit j of the stream belongs to field `owner`; its shift is the distance to the end.
  owner = np.repeat(np.arange(values.size, dtype=np.int32), widths)
  shift = np.repeat(ends, widths) - 1 - np.arange(ends[-1] if ends.size else 0)
  return ((values[owner] >> shift) & 1).astype(np.uint8)


def _read(stream, pos, width, count=1) -> np.ndarray:
  chunk = stream[pos : pos + width * count].reshape(count, width).astype(np.int64)
  return chunk @ (1 << np.arange(width - 1, -1, -1, dtype=np.int64))


def encode_stream(symbols: np.ndarray, bits: int) -> np.ndarray:
  """The stream (uint8 0/1 bits) of symbols in 0..2^bits - 1."""
  symbols = np.asarray(symbols, np.int64).ravel()
  raw = lambda: np.concatenate([[0], _fields(symbols, bits)]).astype(np.uint8)
  if symbols.size == 0:
    return raw()
  lo, hi = int(symbols.min()), int(symbols.max())
  lengths = huffman_lengths(np.bincount(symbols - lo, minlength=hi - lo + 1))
  codes, _ = canonical_codes(lengths)
  header = _fields([1, lo, hi - lo, *lengths], [1, bits, bits] + [LENGTH_BITS] * lengths.size)
  coded = np.concatenate([header, _fields(codes[symbols - lo], lengths[symbols - lo])])
  return coded if coded.size < 1 + symbols.size * bits else raw()


def decode_stream(stream: np.ndarray, n: int, bits: int) -> np.ndarray:
  """The n symbols of a stream (int64); exact inverse of `encode_stream`."""
  stream = np.asarray(stream, np.uint8)
  if stream[0] == 0:
    return _read(stream, 1, bits, n)
  lo, span = _read(stream, 1, bits, 2) + np.array([0, 1])
  lengths = _read(stream, 1 + 2 * bits, LENGTH_BITS, span)
  body = stream[1 + 2 * bits + LENGTH_BITS * span :]
  return lo + _decode_body(body, n, lengths)


def _decode_body(body, n, lengths):
  codes, order = canonical_codes(lengths)
  longest, size = int(lengths.max()), body.size
  # The `longest` bits starting at every position, as one integer each.
  padded = np.concatenate([body, np.zeros(longest, np.uint8)]).astype(np.int32)
  window = np.zeros(size, np.int32)
  for j in range(longest):
    window = (window << 1) | padded[j : j + size]
  # The codeword starting at each position, from a table indexed by the next `longest`
  # bits: a code c of length l fills the entries c << (longest - l) ... (c + 1) << ... - 1.
  table_symbol = np.full(2**longest, -1, np.int64)
  table_length = np.zeros(2**longest, np.int32)
  for s in order:
    shift = longest - int(lengths[s])
    table_symbol[codes[s] << shift : (codes[s] + 1) << shift] = s
    table_length[codes[s] << shift : (codes[s] + 1) << shift] = lengths[s]
  symbol_at = np.append(table_symbol[window], -1)
  length_at = table_length[window]
  # Decoding is a walk pos -> pos + length; pointer doubling finds its first n steps in
  # log2(n) vectorized gathers instead of a Python loop over symbols.
  jump = np.where(length_at > 0, np.arange(size, dtype=np.int32) + length_at, size)
  jump = np.append(np.minimum(jump, size), size).astype(np.int32)
  positions = np.zeros(1, np.int32)
  while positions.size < n:
    positions = np.concatenate([positions, jump[positions]])
    if positions.size < n:
      jump = jump[jump]
  return symbol_at[positions[:n]]


def to_words(stream: np.ndarray, num_words: int) -> np.ndarray:
  """Packs a bit array into uint32 words, bit i at bit i % 32 of word i // 32."""
  padded = np.zeros(num_words * 32, np.uint8)
  padded[: stream.size] = stream
  return np.packbits(padded, bitorder="little").view("<u4").astype(np.uint32)


def from_words(words: np.ndarray) -> np.ndarray:
  """Unpacks uint32 words into their bits, inverse of `to_words`."""
  return np.unpackbits(np.asarray(words, "<u4").view(np.uint8), bitorder="little")


def capacity_words(n: int, bits: int) -> int:
  """Words of the static buffer that holds any stream of n codes of `bits` bits."""
  return math.ceil((1 + n * bits) / 32)


# The stage.


def check_codes(codes: np.ndarray, bits: int) -> None:
  """Raises unless every code is in 0..2^bits - 1."""
  if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
    raise ValueError(
      f"entropy_code({bits}) got codes in {codes.min()}..{codes.max()}, outside "
      f"0..{2**bits - 1}. It takes a code stage's output, not packed words: use "
      f"quantize_codes({bits}) before it, not uniform_quantize (which packs), and give "
      f"both the same bits."
    )


@named
def entropy_code(bits: int) -> Stage:
  """Huffman-codes codes in 0..2^bits - 1 into a `Stream` (lossless; host-side)."""
  bits = check_bits("entropy_code", bits)

  def encode(codes, key, shared_key):
    if not jnp.issubdtype(codes.dtype, jnp.integer):
      raise ValueError(
        f"entropy_code({bits}) encodes integer codes; got {codes.dtype} values: "
        f"put it after a stage that emits codes, e.g. quantize_codes({bits})."
      )
    codes = codes.reshape(-1)
    num_words = capacity_words(codes.size, bits)

    def host(c):
      c = np.asarray(c)
      check_codes(c, bits)
      stream = encode_stream(c, bits)
      return to_words(stream, num_words), np.int32(stream.size)

    shapes = (jax.ShapeDtypeStruct((num_words,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32))
    words, num_bits = jax.pure_callback(host, shapes, codes, vmap_method="sequential")
    # The stream is the side information; `values` (what a next stage would get) is empty,
    # since a chain needs an array there and nothing follows a lossless coder.
    return Encoded(jnp.zeros((0,), jnp.uint32), Stream(words, num_bits))

  def decode(enc, spec, shared_key):
    n = num_values(spec)

    def host(words, num_bits):
      stream = from_words(np.asarray(words))[: int(num_bits)]
      return decode_stream(stream, n, bits).astype(spec.dtype)

    out = jax.pure_callback(
      host,
      jax.ShapeDtypeStruct((n,), spec.dtype),
      enc.side.words,
      enc.side.num_bits,
      vmap_method="sequential",
    )
    return out.reshape(spec.shape)

  return stateless(encode, decode, takes=codes_kind(bits), emits=STREAM)
