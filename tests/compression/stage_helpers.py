"""Helpers of the stage tests: a fixed key, Gaussian data, jitted encode and decode.

Import as `from tests.compression import stage_helpers` (run pytest from the repo root).
"""

import jax
import jax.numpy as jnp
import numpy as np

KEY = jax.random.key(0)


def round_trip(stage, x, key=KEY, shared=KEY):
  """Jitted encode and decode of `x` (its own spec), with the given keys."""
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)

  @jax.jit
  def run(x, key, shared):
    enc = stage.encode(state, x, key, shared)
    return enc, stage.decode(state, enc, spec, shared)

  return run(x, key, shared)


def gaussian(d, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=d), jnp.float32)


def coder(stage, x):
  """Jitted encode and decode of `x`'s spec, with explicit private and shared keys."""
  spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
  state = stage.init(spec)
  encode = jax.jit(lambda x, key, shared: stage.encode(state, x, key, shared))
  decode = jax.jit(lambda enc, shared: stage.decode(state, enc, spec, shared))
  return encode, decode
