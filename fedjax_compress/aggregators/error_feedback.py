"""Error feedback: clients remember what compression lost and send it later.

Each client keeps a row of state across rounds, in the client-state table that the
process keeps beside the server state (keyed by client id, gathered for the round's
clients and scattered back; see `learning.rounds.fold`). With `C` the client's
encode-then-decode through `stage`:

- `"ef"` (error feedback, Seide et al. 2014; Karimireddy et al. 2019): the row is the
  residual e. The client sends `C(x + e)` and keeps `e <- x + e - C(x + e)`.
- `"ef21"` (Richtarik et al., 2021): the row is g, the client's last estimate, which the
  server holds too since it is built from the messages. The client sends `C(x - g)`;
  both sides set `g <- g + C(x - g)`, and g is what enters the sum.

The rows never cross the wire: they are the clients' memory (and, for EF21, the
server's copy). A client decodes its own message (it knows every key involved), so the
server's sum equals the sum of what clients decoded. Rows are stored in
`storage_dtype` (bfloat16 halves the table; the arithmetic stays float32).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_compress.aggregators.base import (
  UPLINK_BITS,
  Aggregator,
  Measurements,
  PyTree,
  set_clients,
  sum_over_clients,
  zero_bits,
)
from fedjax_compress.aggregators.encoded import Policy, leaf_codecs, send_clients, stage_policy
from fedjax_compress.compression.base import Spec, Stage

KINDS = ("ef", "ef21")


class ErrorFeedbackPartial(NamedTuple):
  """`error_feedback`'s partial result."""

  sum: PyTree  # float32: the sum of what the clients' messages decode to (`ef21`: their g)
  row_sq: jax.Array  # float32 [num_clients]: the squared norm of each client's new row
  bits: Measurements


def error_feedback(
  stage: Stage | Policy, *, threshold: int = 0, kind: str = "ef", storage_dtype=jnp.float32
) -> Aggregator:
  """A sum of client updates sent through `stage` with error feedback of `kind`.

  Use it where `encoded_sum` goes, e.g. `float32_mean(error_feedback(eden(1)))`. Leaves at or
  under `threshold` elements travel as float32 (their residual stays zero).
  """
  if kind not in KINDS:
    raise ValueError(f"error feedback kind={kind!r}; valid: {KINDS}.")
  if not jnp.issubdtype(storage_dtype, jnp.floating):
    raise ValueError(
      f"storage_dtype={storage_dtype!r} must be a floating dtype (float32, "
      f"bfloat16, float16): rows hold real-valued residuals."
    )
  adaptive_message = "error_feedback does not support adaptive stages (with `update`)."
  if isinstance(stage, Stage) and stage.update is not None:
    raise ValueError(adaptive_message)  # A policy's stages are known only per leaf, in `init`.
  policy = stage_policy("error_feedback", stage, threshold)
  codecs_of = lambda spec: leaf_codecs(policy, spec, sum_before_decode=False)

  def init(template):
    codecs, _ = codecs_of(jax.tree.map(lambda x: Spec(x.shape, x.dtype), template))
    for codec in codecs:
      if codec.stage.update is not None:
        raise ValueError(adaptive_message)
    return tuple(c.stage.init(c.spec) for c in codecs)

  def client_init(template):
    return jax.tree.map(lambda x: jnp.zeros(x.shape, storage_dtype), template)

  def start(state, spec, num_clients):
    return ErrorFeedbackPartial(
      jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), spec),
      jnp.zeros((num_clients,), jnp.float32),
      zero_bits(num_clients),
    )

  def accumulate(state, partial, updates, weights, clients, key):
    one_client = jax.tree.map(lambda x: Spec(x.shape[1:], x.dtype), updates)
    codecs, treedef = codecs_of(one_client)
    bits = jnp.zeros(weights.shape, jnp.int32)
    row_sq = jnp.zeros(weights.shape, jnp.float32)
    sums, rows = [], []
    for i, (codec, leaf_state, x, row, total) in enumerate(
      zip(
        codecs,
        state,
        treedef.flatten_up_to(updates),
        treedef.flatten_up_to(clients.states),
        treedef.flatten_up_to(partial.sum),
      )
    ):
      row = row.astype(jnp.float32)
      target = x + row if kind == "ef" else x - row
      message = send_clients(codec, leaf_state, target, key, i, clients.index)
      bits = bits + message.bits
      sent = message.decoded
      new_row, contribution = (target - sent, sent) if kind == "ef" else (row + sent, row + sent)
      sums.append(total + sum_over_clients(contribution))
      rows.append(new_row.astype(storage_dtype))
      row_sq = row_sq + jnp.sum(new_row.reshape(new_row.shape[0], -1) ** 2, axis=1)
    uplink = set_clients(partial.bits[UPLINK_BITS], clients.index, bits)
    new_partial = ErrorFeedbackPartial(
      treedef.unflatten(sums),
      set_clients(partial.row_sq, clients.index, row_sq),
      {**partial.bits, UPLINK_BITS: uplink},
    )
    return new_partial, treedef.unflatten(rows)

  def finish(state, partial, spec, key):
    measurements = {
      **partial.bits,
      f"error_feedback/mean_{'residual' if kind == 'ef' else 'estimate'}_norm": jnp.mean(
        jnp.sqrt(partial.row_sq)
      ),
    }
    return partial.sum, state, measurements

  return Aggregator(init, start, accumulate, finish, client_init)
