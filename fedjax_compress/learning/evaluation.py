"""Evaluation of a global model on masked batches."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from fedjax_compress.data.pipeline import RoundBatch
from fedjax_compress.models import Model, masked_metric_sums


def evaluator(model: Model) -> Callable[[object, RoundBatch], dict[str, float]]:
  """`evaluate(params, batches) -> {loss, accuracy, num_examples}` over every example."""
  batch_sums = jax.jit(lambda p, x, y, m: masked_metric_sums(model.apply(p, x, train=False), y, m))

  def evaluate(params, batches: RoundBatch) -> dict[str, float]:
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for c in range(batches.num_clients):
      for b in np.flatnonzero(batches.mask[c].any(axis=-1)):
        sums = batch_sums(params, batches.x[c, b], batches.y[c, b], batches.mask[c, b])
        for k in totals:
          totals[k] += float(sums[k])
    count = max(totals["count"], 1.0)
    return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count,
            "num_examples": totals["count"]}

  return evaluate
