"""The main command end to end, determinism, and config errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import default, emnist_compression, emnist_fedavg
from experiments import overrides, train

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = [
  "round",
  "train/loss",
  "train/accuracy",
  "train/num_examples",
  "train/num_batches",
  "round_broadcasted_bits",
  "round_aggregated_bits",
  "broadcasted_bits",
  "aggregated_bits",
  "round_seconds",
]


def _records(workdir):
  return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").open()]


@pytest.mark.slow
def test_main_command_runs_the_cnn_on_the_embedded_data(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=configs/default.py",
      f"--workdir={tmp_path}",
      "--config.rounds=3",
      "--config.clients_per_round=4",
      "--config.eval_every=2",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env={
      k: v for k, v in {**os.environ, "JAX_PLATFORMS": "cpu"}.items() if k != "TF_CPP_MIN_LOG_LEVEL"
    },
  )
  assert result.returncode == 0, result.stderr[-3000:]
  # TensorFlow (TensorBoard's writer) prints nothing: its C++ lines are silenced.
  for marker in ("oneDNN", "tensorflow/core", "cpu_feature_guard", "TF-TRT"):
    assert marker not in result.stderr + result.stdout
  records = _records(tmp_path)
  assert [r["round"] for r in records] == [1, 2, 3]
  for record in records:
    assert set(REQUIRED) <= set(record)
  assert "eval/accuracy" in records[1] and "eval/loss" in records[2]
  assert "eval/accuracy" not in records[0]
  assert records[2]["aggregated_bits"] == sum(r["round_aggregated_bits"] for r in records)
  assert records[0]["round_update_bits"] == 4 * 1_663_370 * 32
  assert list(tmp_path.glob("events.out.tfevents.*")), "no TensorBoard events written"
  assert "round     3/3" in result.stdout and "rounds/s" in result.stdout and "ETA" in result.stdout


def _small_config(*pairs):
  config = default.get_config()
  for key, value in (
    ("model", "mlp"),
    ("rounds", "3"),
    ("clients_per_round", "4"),
    ("eval_every", "3"),
    *pairs,
  ):
    overrides.apply(config, key, value)
  return config


def _comparable(records):
  return [{k: v for k, v in r.items() if k not in train.DIAGNOSTIC_KEYS} for r in records]


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(tmp_path):
  config = _small_config(("aggregator", "compression(threshold=1000)"))
  a = train.train_and_evaluate(config, str(tmp_path / "a"))
  b = train.train_and_evaluate(config, str(tmp_path / "b"))
  assert _comparable(a) == _comparable(b)
  assert _comparable(_records(tmp_path / "a")) == _comparable(_records(tmp_path / "b"))


def test_different_seeds_sample_different_clients(tmp_path):
  a = train.train_and_evaluate(_small_config(("seed", "0")), str(tmp_path / "a"))
  b = train.train_and_evaluate(_small_config(("seed", "1")), str(tmp_path / "b"))
  assert [r["train/num_examples"] for r in a] != [r["train/num_examples"] for r in b]


@pytest.mark.parametrize(
  "pairs,message",
  [
    ([("data.name", "mnist")], "unknown dataset 'mnist'"),
    ([("model.name", "resnet")], "unknown model 'resnet'"),
    ([("aggregator.name", "median")], "unknown aggregator 'median'"),
    ([("batch_size", "0")], "config.batch_size=0 is invalid"),
    ([("aggregator", "compression(bits=17)")], "bits=17"),
    ([("bit_accounting", "approx")], "valid values"),
    ([("aggregator", "encoded_mean(stages='hadamard,nope')")], "Unknown stage 'nope'.*valid"),
    ([("aggregator", "encoded_mean(stages='uniform_quantize(bits=17)')")], "bits=17"),
    (
      [("aggregator", "encoded_mean(stages='drive', error_feedback='ef3')")],
      "error_feedback='ef3'",
    ),
    (
      [("aggregator.error_feedback", "ef")],
      "'error_feedback' is not an argument of aggregator 'mean'",
    ),
    (
      [
        (
          "aggregator",
          "encoded_mean(stages='drive', error_feedback='ef', client_state_dtype='int8')",
        )
      ],
      "client_state_dtype='int8'",
    ),
    (
      [("aggregator", "encoded_mean(stages='drive', client_state_dtype='bfloat16')")],
      "set error_feedback too",
    ),
    ([("broadcast", "encoded(stages='hadamard,nope')")], "config.broadcast: .*'nope'"),
    (
      [("broadcast", "encoded(stages='adaptive_quantize(target_vnmse=0.1)')")],
      "config.broadcast: Adaptive stages",
    ),
    ([("imports", "no_such_module")], "cannot import 'no_such_module'"),
  ],
)
def test_bad_configs_fail_before_any_data_is_read(tmp_path, monkeypatch, pairs, message):
  monkeypatch.setattr(
    "fedjax_compress.data.sources.load_embedded_digits",
    lambda *a, **k: pytest.fail("data was read"),
  )
  with pytest.raises(train.ConfigError, match=message):
    train.train_and_evaluate(_small_config(*pairs), str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_too_many_clients_per_round_is_a_clear_error(tmp_path):
  with pytest.raises(train.ConfigError, match="exceeds the 50 training clients"):
    train.train_and_evaluate(_small_config(("clients_per_round", "51")), str(tmp_path))


def test_seed_configs_match_the_tutorial():
  c = emnist_fedavg.get_config()
  assert (c.data.name, c.model.name, c.clients_per_round, c.batch_size, c.epochs) == (
    "emnist",
    "cnn",
    10,
    20,
    1,
  )
  assert c.client_optimizer.to_dict() == {"name": "sgd", "learning_rate": 0.02}
  assert c.server_optimizer.to_dict() == {"name": "sgd", "learning_rate": 1.0}
  assert (c.client_weighting, c.shuffle, c.aggregator.name) == ("num_examples", True, "mean")
  c = emnist_compression.get_config()
  assert c.aggregator.to_dict() == {"name": "compression", "bits": 8, "threshold": 20_000}
