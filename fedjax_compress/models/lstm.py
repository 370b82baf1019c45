"""An LSTM layer laid out for speed on CPU.

`LSTM` computes the same function as a textbook LSTM (gates i, f, g, o; see
`lstm_reference`), arranged so that little work stays inside the sequential loop:

* The input projections of all time steps are one matrix product, [T * B, in] x
  [in, 4H], before the recurrence; inside it, only h @ W_h remains, one [B, H] x [H, 4H]
  product for all four gates at once.
* The recurrence is a `lax.scan` over time with a configurable `unroll` (default 1:
  on CPU, unrolling did not pay for its longer compiles; see the benchmark).
* Its gradient is written by hand (`jax.custom_vjp`): the backward scan carries only
  (dh, dc) and emits each step's gate gradient; the recurrent kernel's gradient is then
  one [H, T * B] x [T * B, 4H] product after the loop. JAX's own transpose of the scan
  instead carries the kernel's gradient through the loop, adding a rank-B outer product
  into that [H, 4H] buffer at every step.

benchmarks/lstm_forms.py measures these choices against Flax's `nn.RNN` over
`nn.OptimizedLSTMCell` in Reddi et al. 2021's character and word LSTMs (figures in
benchmarks/RESULTS.md, "Shakespeare LSTM step forms"). `LSTM(features, name=...)` takes
the place of `nn.RNN(cell, name=...)` on [B, T, in] inputs, with its own parameters.

Initialisation follows Keras's `LSTM` (the models of Reddi et al. were Keras models):
Glorot-uniform input kernel, orthogonal recurrent kernel, zero bias except the forget
gate's, which starts at `forget_bias` = 1 (Jozefowicz et al. 2015), so that the cell
keeps its memory at the start of training.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import linen as nn

GATES = ("i", "f", "g", "o")  # the order of the four H-wide blocks of the 4H axis


def _split_gates(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Pre-activations [..., 4H] -> activations (i, f, g, o), each [..., H]."""
  zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
  return jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)


def lstm_cell(carry: tuple[jax.Array, jax.Array], z_x: jax.Array, w_h: jax.Array):
  """One LSTM step from the input's projection `z_x` = x @ W_x + b, [B, 4H].

  c' = f * c + i * g, h' = o * tanh(c'), with (i, f, g, o) = activations of
  z_x + h @ W_h. Returns ((h', c'), h').
  """
  h, c = carry
  i, f, g, o = _split_gates(z_x + h @ w_h)
  c = f * c + i * g
  h = o * jnp.tanh(c)
  return (h, c), h


def lstm_reference(x: jax.Array, w_x: jax.Array, w_h: jax.Array, b: jax.Array) -> jax.Array:
  """The textbook LSTM, one step at a time, for tests: x [B, T, in] -> h [B, T, H].

  Starts from h = c = 0; each step computes x_t @ W_x + h @ W_h + b.
  """
  batch, hidden = x.shape[0], w_h.shape[0]
  carry = (jnp.zeros((batch, hidden), x.dtype),) * 2
  outputs = []
  for t in range(x.shape[1]):
    carry, h = lstm_cell(carry, x[:, t] @ w_x + b, w_h)
    outputs.append(h)
  return jnp.stack(outputs, axis=1)


def _forward_scan(z_x: jax.Array, w_h: jax.Array, unroll: int):
  """The recurrence over time-major projections z_x [T, B, 4H] from h = c = 0.

  Returns (hs, cs, gates): hidden and cell states [T, B, H] and gate activations
  [T, B, 4H] (i, f, g, o), all that the backward pass needs.
  """
  batch, hidden = z_x.shape[1], w_h.shape[0]

  def step(carry, z):
    h, c = carry
    i, f, g, o = _split_gates(z + h @ w_h)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), (h, c, jnp.concatenate([i, f, g, o], axis=-1))

  zeros = jnp.zeros((batch, hidden), z_x.dtype)
  _, (hs, cs, gates) = jax.lax.scan(step, (zeros, zeros), z_x, unroll=unroll)
  return hs, cs, gates


def _backward_scan(
  d_hs: jax.Array, cs: jax.Array, gates: jax.Array, w_h: jax.Array, unroll: int
) -> jax.Array:
  """Gradients of the pre-activations, dz [T, B, 4H], from the outputs' d_hs [T, B, H].

  Walks time backwards carrying (dh, dc), the gradients flowing into step t from
  step t + 1; the recurrent product dz_t @ W_h^T is the only matrix product inside.
  """
  c_prev = jnp.concatenate([jnp.zeros_like(cs[:1]), cs[:-1]])
  w_h_t = w_h.T

  def step(carry, inputs):
    dh_next, dc_next = carry
    d_h, c, c_before, gate = inputs
    i, f, g, o = jnp.split(gate, 4, axis=-1)
    dh = d_h + dh_next
    tanh_c = jnp.tanh(c)
    dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
    dz = jnp.concatenate(
      [
        dc * g * i * (1 - i),
        dc * c_before * f * (1 - f),
        dc * i * (1 - g * g),
        dh * tanh_c * o * (1 - o),
      ],
      axis=-1,
    )
    return (dz @ w_h_t, dc * f), dz

  zeros = jnp.zeros_like(d_hs[0])
  _, dz = jax.lax.scan(step, (zeros, zeros), (d_hs, cs, c_prev, gates), reverse=True, unroll=unroll)
  return dz


def _recurrence_fwd(z_x, w_h, unroll):
  hs, cs, gates = _forward_scan(z_x, w_h, unroll)
  return hs, (hs, cs, gates, w_h)


def _recurrence_bwd(unroll, residuals, d_hs):
  hs, cs, gates, w_h = residuals
  dz = _backward_scan(d_hs, cs, gates, w_h, unroll)
  h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]])
  # One product over all steps instead of one rank-B update of the kernel per step.
  d_w_h = jnp.einsum("tbh,tbg->hg", h_prev, dz)
  return dz, d_w_h


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def recurrence(z_x: jax.Array, w_h: jax.Array, unroll: int) -> jax.Array:
  """hs [T, B, H] of the LSTM recurrence over time-major z_x [T, B, 4H] (the input
  projections, bias included) with recurrent kernel w_h [H, 4H], from h = c = 0.

  `unroll` is static. Its gradient is the hand-written one (module docstring).
  """
  return _forward_scan(z_x, w_h, unroll)[0]


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def recurrence_autodiff(z_x: jax.Array, w_h: jax.Array, unroll: int) -> jax.Array:
  """`recurrence` with JAX's own gradient of the scan (for benchmarks and tests)."""
  return _forward_scan(z_x, w_h, unroll)[0]


class LSTM(nn.Module):
  """An LSTM layer: x [B, T, in] -> h [B, T, features], from h = c = 0.

  Parameters: `kernel_x` [in, 4H], `kernel_h` [H, 4H], `bias` [4H], the four gates'
  blocks in the order i, f, g, o. `unroll`: time steps per loop iteration of the scan
  (forward and backward). `hand_gradient`: the hand-written backward pass (module
  docstring); False uses JAX's transpose of the scan (same values, kept to measure).
  No sequence mask: padding at the end of a sequence does not change the outputs before
  it, so mask it in the loss.
  """

  features: int
  unroll: int = 1
  hand_gradient: bool = True
  forget_bias: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    hidden = self.features
    w_x = self.param("kernel_x", nn.initializers.glorot_uniform(), (x.shape[-1], 4 * hidden))
    w_h = self.param("kernel_h", nn.initializers.orthogonal(), (hidden, 4 * hidden))
    b = self.param("bias", _gate_bias_init(self.forget_bias), (4 * hidden,))
    # Time-major before the projection: transposing x (narrow) is cheaper than z (4H).
    z_x = jnp.swapaxes(x, 0, 1) @ w_x + b
    run = recurrence if self.hand_gradient else recurrence_autodiff
    return jnp.swapaxes(run(z_x, w_h, self.unroll), 0, 1)


def _gate_bias_init(forget_bias: float):
  """Zeros, except `forget_bias` on the forget gate's block (the second of four)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    hidden = shape[0] // 4
    return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(forget_bias)

  return init
