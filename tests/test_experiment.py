"""The main command end to end, determinism, and config errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import default, emnist_compression, emnist_fedavg
from experiments import train

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ["round", "train/loss", "train/accuracy", "train/num_examples", "train/num_batches",
            "round_broadcasted_bits", "round_aggregated_bits", "broadcasted_bits",
            "aggregated_bits", "round_seconds"]


def _records(workdir):
  return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").open()]


def test_main_command_runs_the_cnn_on_the_embedded_data(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.main", "--config=configs/default.py",
       f"--workdir={tmp_path}", "--config.rounds=3", "--config.clients_per_round=4",
       "--config.eval_every=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-3000:]
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


def _small_config(**overrides):
  config = default.get_config()
  config.model, config.rounds, config.clients_per_round, config.eval_every = "mlp", 3, 4, 3
  for key, value in overrides.items():
    config[key] = value
  return config


def _comparable(records):
  return [{k: v for k, v in r.items() if k not in train.DIAGNOSTIC_KEYS} for r in records]


def test_same_config_and_seed_give_identical_metrics(tmp_path):
  config = _small_config(aggregator="compression", encode_threshold=1000)
  a = train.train_and_evaluate(config, str(tmp_path / "a"))
  b = train.train_and_evaluate(config, str(tmp_path / "b"))
  assert _comparable(a) == _comparable(b)
  assert _comparable(_records(tmp_path / "a")) == _comparable(_records(tmp_path / "b"))


def test_different_seeds_sample_different_clients(tmp_path):
  a = train.train_and_evaluate(_small_config(seed=0), str(tmp_path / "a"))
  b = train.train_and_evaluate(_small_config(seed=1), str(tmp_path / "b"))
  assert [r["train/num_examples"] for r in a] != [r["train/num_examples"] for r in b]


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "mnist", "valid datasets"),
    ("model", "resnet", "valid models"),
    ("aggregator", "median", "valid aggregators"),
    ("batch_size", 0, "config.batch_size=0"),
    ("client_lr", -0.1, "config.client_lr=-0.1"),
    ("quantization_bits", 17, "1..16"),
    ("bit_accounting", "approx", "valid values"),
])
def test_bad_config_values_name_the_key_and_the_valid_range(key, value, message):
  config = _small_config(**{key: value})
  with pytest.raises(train.ConfigError, match=message):
    train.validate_config(config)


@pytest.mark.parametrize("stages,message", [
    ("hadamard,nope", "Unknown stage 'nope'.*valid names"),
    ("uniform_quantize(bits=17)", "bits=17 is out of range: quantization supports 1..16"),
])
def test_bad_stages_fail_before_any_data_is_read(tmp_path, monkeypatch, stages, message):
  monkeypatch.setattr(train, "load_data", lambda config: pytest.fail("data was read"))
  config = _small_config(aggregator="encoded_mean", stages=stages)
  with pytest.raises(train.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("overrides,message", [
    ({"aggregator": "encoded_mean", "stages": "drive", "error_feedback": "ef3"},
     "error_feedback='ef3'; valid"),
    ({"aggregator": "mean", "error_feedback": "ef"}, "applies to aggregator='encoded_mean'"),
    ({"aggregator": "encoded_mean", "stages": "drive", "error_feedback": "ef",
      "client_state_dtype": "int8"}, "client_state_dtype='int8'"),
    ({"broadcast_stages": "hadamard,nope"}, "broadcast_stages: Unknown stage 'nope'"),
    ({"aggregator": "encoded_mean", "stages": "drive", "client_state_dtype": "bfloat16"},
     "set error_feedback too"),
    ({"broadcast_stages": "adaptive_quantize(target_vnmse=0.1)"},
     "broadcast_stages: Adaptive stages"),
])
def test_bad_feedback_and_downlink_settings_fail_before_any_data_is_read(
    tmp_path, monkeypatch, overrides, message):
  monkeypatch.setattr(train, "load_data", lambda config: pytest.fail("data was read"))
  with pytest.raises(train.ConfigError, match=message):
    train.train_and_evaluate(_small_config(**overrides), str(tmp_path))


def test_an_unimportable_module_is_a_config_error(tmp_path):
  with pytest.raises(train.ConfigError, match="cannot import 'no_such_module'"):
    train.train_and_evaluate(_small_config(imports="no_such_module"), str(tmp_path))


def test_too_many_clients_per_round_is_a_clear_error(tmp_path):
  with pytest.raises(train.ConfigError, match="exceeds the 50 training clients"):
    train.train_and_evaluate(_small_config(clients_per_round=51), str(tmp_path))


def test_seed_configs_match_the_tutorial():
  c = emnist_fedavg.get_config()
  assert (c.dataset, c.model, c.clients_per_round, c.batch_size, c.epochs) == ("emnist", "cnn", 10, 20, 1)
  assert (c.client_lr, c.server_lr, c.client_weighting, c.shuffle) == (0.02, 1.0, "num_examples", True)
  c = emnist_compression.get_config()
  assert (c.aggregator, c.quantization_bits, c.encode_threshold) == ("compression", 8, 20_000)
