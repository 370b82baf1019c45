"""Evaluation of a global model on masked batches."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from fedjax_compress.data.pipeline import RoundBatch
from fedjax_compress.models import Model, is_stateful


def evaluator(model: Model) -> Callable[..., dict[str, float]]:
  """`evaluate(params, batches, model_state=()) -> metrics` over every example, the model
  in evaluation mode (`train=False`: no dropout, BatchNorm's running statistics).

  The metrics are the model task's (`model.task.summarize`): {loss, accuracy,
  num_examples} for classification; for a sequence task also accuracy_no_oov,
  accuracy_no_oov_no_eos and num_tokens (`models.sequence_task`).

  A stateful model is evaluated with `model_state`, the server's
  (`ServerState.model_state`); leaving it out is an error.
  """
  if is_stateful(model):

    def forward(p, s, x):
      return model.apply_with_state(p, s, x, train=False)[0]
  else:
    forward = lambda p, s, x: model.apply(p, x, train=False)
  metric_sums, summarize = model.task.metric_sums, model.task.summarize
  batch_sums = jax.jit(lambda p, s, x, y, m: metric_sums(forward(p, s, x), y, m))

  def evaluate(params, batches: RoundBatch, model_state: Any = ()) -> dict[str, float]:
    if is_stateful(model) and isinstance(model_state, tuple) and model_state == ():
      raise ValueError(
        "This model has state: evaluate(params, batches, model_state) with "
        "the server's state.model_state."
      )
    totals = None
    for c in range(batches.num_clients):
      for b in np.flatnonzero(batches.mask[c].any(axis=-1)):
        sums = batch_sums(params, model_state, batches.x[c, b], batches.y[c, b], batches.mask[c, b])
        if totals is None:
          totals = {k: 0.0 for k in sums}
        for k in totals:
          totals[k] += float(sums[k])
    if totals is None:  # no examples: every sum is 0
      totals = {
        k: 0.0
        for k in jax.eval_shape(
          batch_sums, params, model_state, batches.x[0, 0], batches.y[0, 0], batches.mask[0, 0]
        )
      }
    return summarize(totals)

  return evaluate
