"""Evaluation of a global model on masked batches."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from fedjax_compress.data.pipeline import RoundBatch
from fedjax_compress.models import Model, is_stateful, masked_metric_sums


def evaluator(model: Model) -> Callable[..., dict[str, float]]:
  """`evaluate(params, batches, model_state=()) -> {loss, accuracy, num_examples}` over
  every example, the model in evaluation mode (`train=False`: no dropout, BatchNorm's
  running statistics).

  A stateful model is evaluated with `model_state`, the server's
  (`ServerState.model_state`); leaving it out is an error.
  """
  if is_stateful(model):
    def forward(p, s, x):
      return model.apply_with_state(p, s, x, train=False)[0]
  else:
    forward = lambda p, s, x: model.apply(p, x, train=False)
  batch_sums = jax.jit(lambda p, s, x, y, m: masked_metric_sums(forward(p, s, x), y, m))

  def evaluate(params, batches: RoundBatch, model_state: Any = ()) -> dict[str, float]:
    if is_stateful(model) and isinstance(model_state, tuple) and model_state == ():
      raise ValueError("This model has state: evaluate(params, batches, model_state) with "
                       "the server's state.model_state.")
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for c in range(batches.num_clients):
      for b in np.flatnonzero(batches.mask[c].any(axis=-1)):
        sums = batch_sums(params, model_state, batches.x[c, b], batches.y[c, b],
                          batches.mask[c, b])
        for k in totals:
          totals[k] += float(sums[k])
    count = max(totals["count"], 1.0)
    return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count,
            "num_examples": totals["count"]}

  return evaluate
