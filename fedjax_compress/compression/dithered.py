"""Subtractive dithered uniform quantization with a dither shared by client and server.

With step D and dither u ~ U[0, 1) from the shared key, a client sends
q = floor((x + m) / D + u); the server subtracts the dither: x_hat = (q + 1/2 - u) D - m.
The error (1/2 - frac((x + m) / D + u)) D is uniform on (-D/2, D/2] whatever x is: the
estimate is unbiased with variance D^2 / 12 per value, and the error is independent of
x. m = max|x| keeps q within 0..2^bits - 1 when D >= 2m / (2^bits - 1).
"""

from __future__ import annotations

import jax.numpy as jnp

from fedjax_compress.compression import arguments as check
from fedjax_compress.compression import prng
from fedjax_compress.compression.base import FLOAT, Encoded, Stage, codes_kind, named, stateless
from fedjax_compress.compression.bitpack import bitpack, check_bits, code_dtype
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.flat import flat, nonzero, unflat


def _check_step(owner: str, step):
  return None if step is None else check.real(owner, "step", step, 0.0, lo_open=True)


@named
def dithered_codes(bits: int, *, step: float | None = None) -> Stage:
  """Dithered codes in 0..2^bits - 1 (uint8 / uint16); side: m and D (two float32).

  Args:
    bits: code width.
    step: D as a multiple of the RMS of x (e.g. 0.26 gives codes of about 4 bits of
      entropy on Gaussian data, for an entropy coder); never finer than the bits allow.
      None: the finest step the bits allow, 2 max|x| / (2^bits - 1).
  """
  bits, step = check_bits("dithered_codes", bits), _check_step("dithered_codes", step)
  top = 2**bits - 1

  def encode(x, key, shared_key):
    x = flat(x)
    m = jnp.max(jnp.abs(x))
    delta = 2 * m / top
    if step is not None:
      delta = jnp.maximum(delta, step * jnp.sqrt(jnp.mean(x * x)))
    delta = nonzero(delta)  # x == 0: any step is exact
    u = prng.uniform(shared_key, x.shape)
    # The clip only guards float32 round-off at the top of the range.
    q = jnp.clip(jnp.floor((x + m) / delta + u), 0, top)
    return Encoded(q.astype(code_dtype(bits)), (m, delta))

  def decode(enc, spec, shared_key):
    m, delta = enc.side
    u = prng.uniform(shared_key, enc.values.shape)
    x = (enc.values.astype(jnp.float32) + 0.5 - u) * delta - m
    return unflat(x, spec)

  return stateless(encode, decode, takes=FLOAT, emits=codes_kind(bits))


@named
def dithered(bits: int = 4, *, step: float | None = None) -> Stage:
  """Dithered uniform quantization packed at `bits` bits, plus two float32."""
  bits, step = check_bits("dithered", bits), _check_step("dithered", step)
  return chain(dithered_codes(bits, step=step), bitpack(bits))
