"""Exact payload sizing: the bits of arrays on the wire, and variable-length streams.

`payload_bits` is static (shapes and dtypes only): every array at its dtype's width, a
`Stream` at its capacity. `measured_bits` is traced, per client: a `Stream` at its true
length. Stages emit a `Stream` where their size depends on the data (entropy coding,
adaptive widths); aggregators count what their clients send with these.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def value_bits(dtype) -> int:
  """Bits of one value on the wire: its width, a bool being one bit."""
  dtype = np.dtype(dtype)
  return 1 if dtype == np.bool_ else dtype.itemsize * 8


class Stream(NamedTuple):
  """A variable-length bitstream in a static buffer: only its first `num_bits` are sent."""

  words: jax.Array  # uint32 [capacity]
  num_bits: jax.Array  # int32 []: the stream's length, a count rather than payload


def _is_stream(node) -> bool:
  return isinstance(node, Stream)


def payload_bits(tree: PyTree) -> int:
  """The size of a payload: every array at its dtype's width, a `Stream` at its capacity.

  Static: only shapes and dtypes are read, so it works on traced values too. Exact for
  fixed-width payloads, an upper bound where a `Stream` is involved.
  """
  return sum(
    int(np.prod(leaf.words.shape)) * 32
    if _is_stream(leaf)
    else int(np.prod(leaf.shape)) * value_bits(leaf.dtype)
    for leaf in jax.tree.leaves(tree, is_leaf=_is_stream)
  )


def measured_bits(tree: PyTree) -> jax.Array:
  """The exact size of one client's payload, streams at their true length (int32).

  Traceable; use per client (inside `vmap`). Fixed-width arrays count as `payload_bits`.
  """
  total = jnp.zeros((), jnp.int32)
  for leaf in jax.tree.leaves(tree, is_leaf=_is_stream):
    total += leaf.num_bits if _is_stream(leaf) else payload_bits(leaf)
  return total
