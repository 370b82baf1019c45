"""The README's path for a new compressor: a stage written outside the package."""

import json
import math
import re
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from configs import default
from experiments import overrides, train
from fedjax_compress import aggregators as agg
from fedjax_compress import compression, learning, models
from fedjax_compress.compression.hadamard import padded_size
from fedjax_compress.data import pipeline

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing_a_stage.md"


def _write_module(tmp_path) -> str:
  """Writes the doc's first code block to a module, exactly as a user would."""
  code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
  (tmp_path / "my_stages.py").write_text(code)
  sys.path.insert(0, str(tmp_path))
  return "my_stages"


def _sign_bits(template):
  # One bit per rotated value, packed into whole 32-bit words, plus one float32 scale.
  return sum(math.ceil(padded_size(x.size) / 32) * 32 + 32 for x in jax.tree.leaves(template))


def test_the_documented_stage_plugs_into_fed_avg(tmp_path, tiny_model, small_data):
  my_stages = __import__(_write_module(tmp_path))
  aggregator = agg.encoded_mean(compression.chain(compression.hadamard(), my_stages.scaled_sign()))
  process = learning.fed_avg(tiny_model, optax.sgd(0.1), optax.sgd(1.0), aggregator=aggregator)
  state = process.init(jax.random.key(0))
  batch = pipeline.round_batch(small_data, small_data.client_ids[:3], batch_size=8)
  new_state, metrics = process.next(state, batch, jax.random.key(1))
  assert metrics["round_update_bits"] == 3 * _sign_bits(state.params)
  moved = [
    np.abs(a - b).max()
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params))
  ]
  assert all(np.isfinite(m) and m > 0 for m in moved)


@pytest.mark.slow
def test_the_documented_stage_plugs_into_a_config_by_name(tmp_path):
  config = default.get_config()
  for key, value in [
    ("model", "mlp"),
    ("rounds", "2"),
    ("clients_per_round", "3"),
    ("eval_every", "2"),
    ("imports", _write_module(tmp_path)),
    ("aggregator", "encoded_mean(stages='hadamard,my_sign', threshold=0)"),
  ]:
    overrides.apply(config, key, value)
  history = train.train_and_evaluate(config, str(tmp_path / "run"))
  template = jax.eval_shape(models.create_model("mlp", 10).init, jax.random.key(0))
  assert history[-1]["round_update_bits"] == 3 * _sign_bits(template)
  logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  assert [r["round"] for r in logged] == [1, 2] and "eval/accuracy" in logged[-1]
