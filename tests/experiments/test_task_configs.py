"""The tasks' configs (configs/*.py): each is its paper's settings, and runs end to end
through `train.train_and_evaluate` on tiny files in the real layouts.

The runs keep the real models where a run of them is affordable (EMNIST-62's CNN with
dropout, CIFAR-100's ResNet-18-GN, CIFAR-10's CNN; marked slow) and shrink the LSTMs of the
text tasks (their parameter counts are tests/models/test_language.py's). The loaders
themselves are tested in tests/data/.
"""

import json

import numpy as np
import pytest

from configs import cifar100 as cifar100_config
from configs import emnist62, shakespeare, stackoverflow_nwp
from experiments import build, overrides, train
from fedjax_compress import models
from fedjax_compress.data import cifar100, download, pipeline, stackoverflow, tff_emnist
from tests.data import fixtures, fixtures_tff


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
  """Never the real cache, never the internet: the default URL is a closed port."""
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "default_cache"))
  monkeypatch.setenv(tff_emnist.BASE_URL_ENV, "http://127.0.0.1:1/")


def _override(config, *pairs):
  for key, value in pairs:
    overrides.apply(config, key, value)
  return config


# --- EMNIST-62 (Reddi et al.) ------------------------------------------------------------


@pytest.mark.slow
def test_emnist62_config_is_reddi_et_als_and_runs_two_rounds(tmp_path):
  config = emnist62.get_config()
  assert (config.data.name, config.data.only_digits, config.model.name) == (
    "emnist",
    False,
    "cnn_dropout",
  )
  assert (config.rounds, config.clients_per_round, config.batch_size, config.epochs) == (
    1500,
    10,
    20,
    1,
  )
  assert config.client_optimizer.learning_rate == pytest.approx(10**-1.5)
  assert config.server_optimizer.name == "adam"
  assert config.server_optimizer.learning_rate == pytest.approx(10**-2.5)
  assert config.server_optimizer.eps == 1e-4
  fedavg = emnist62.get_config("fedavg")
  assert (fedavg.client_optimizer.learning_rate, fedavg.server_optimizer.learning_rate) == (
    0.1,
    1.0,
  )
  with pytest.raises(ValueError, match="not one of"):
    emnist62.get_config("fedprox")
  fixtures.write_tff_sqlite(tmp_path / tff_emnist.SQLITE_NAME, fixtures.tff_split_clients())
  _override(
    config,
    ("data_dir", str(tmp_path)),
    ("rounds", "2"),
    ("clients_per_round", "2"),
    ("batch_size", "4"),
    ("eval_every", "2"),
    ("checkpoint_every", "0"),
  )
  build.bind(config)
  records = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert [r["round"] for r in records] == [1, 2]
  assert records[-1]["eval/num_examples"] == 7  # all_test: 2 + 3 + 2
  assert np.isfinite(records[-1]["train/loss"])


# --- CIFAR-100 (Reddi et al.) ------------------------------------------------------------


@pytest.mark.slow
def test_cifar100_config_is_reddi_et_als_and_runs_two_rounds(tmp_path):
  assert cifar100_config.get_config("fedavg").server_optimizer.learning_rate == pytest.approx(
    3.1623, abs=1e-4
  )
  config = cifar100_config.get_config()
  assert (config.rounds, config.clients_per_round, config.batch_size, config.epochs) == (
    4000,
    10,
    20,
    1,
  )
  assert config.server_optimizer.name == "adam" and config.server_optimizer.eps == 0.1
  fixtures_tff.write_cifar_sqlite(
    tmp_path / cifar100.SQLITE_NAME,
    {
      "train": fixtures_tff.cifar_clients({"0": 4, "1": 3, "10": 5}, seed=0),
      "test": fixtures_tff.cifar_clients({"0": 2, "1": 3}, seed=1),
    },
  )
  # The full ResNet-18-GN on 8x8 crops; evaluation in one batch of 8, not of the config's
  # 500 (padding examples cost as much as real ones: most of this test's time, before).
  _override(
    config,
    ("data_dir", str(tmp_path)),
    ("rounds", "2"),
    ("clients_per_round", "2"),
    ("batch_size", "4"),
    ("eval_every", "2"),
    ("eval_batch_size", "8"),
    ("checkpoint_every", "0"),
    ("data.crop_size", "8"),
  )
  build.bind(config)
  records = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert [r["round"] for r in records] == [1, 2]
  assert np.isfinite(records[-1]["train/loss"]) and records[-1]["eval/num_examples"] == 5
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["model"]["name"] == "resnet18_gn"


# --- CIFAR-10 on TFDS (McMahan et al.'s CNN) ---------------------------------------------


def _tfds_mock(num_examples):
  tfds = pytest.importorskip("tensorflow_datasets")
  return tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE)


def _cifar10_config(tmp_path):
  from configs import cifar10_fedavg  # pylint: disable=import-outside-toplevel

  config = cifar10_fedavg.get_config()
  config.data.data_dir = str(tmp_path)
  config.rounds, config.clients_per_round, config.eval_every = 1, 2, 1
  return config


@pytest.mark.slow
def test_cifar10_config_trains_one_round(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel

  config = _cifar10_config(tmp_path)
  bound = build.bind(config)
  with _tfds_mock(200):
    data = bound.load_data("train")
  assert data.example_shape == models.zoo.CIFAR_INPUT_SHAPE and len(data.clients) == 100
  model = build.build_model(bound, data)
  process = build.build_process(config, bound, model)
  state = process.init(jax.random.key(0))
  ids = pipeline.sample_clients(data.client_ids, 2, seed=0, round_num=1)
  batch = pipeline.round_batch(data, ids, batch_size=config.batch_size, seed=0, round_num=1)
  state, metrics = process.next(state, batch, jax.random.key(1))
  assert np.isfinite(metrics["train/loss"]) and metrics["round_aggregated_bits"] > 0


@pytest.mark.slow
def test_cifar10_config_end_to_end(tmp_path):
  config = _cifar10_config(tmp_path)
  with _tfds_mock(200):
    history = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert len(history) == 1 and "eval/accuracy" in history[-1]


# --- Stack Overflow next-word prediction (Reddi et al.) ----------------------------------


def test_stackoverflow_config_is_reddi_et_als_and_runs_two_rounds(tmp_path):
  config = stackoverflow_nwp.get_config()
  assert (config.rounds, config.clients_per_round, config.batch_size, config.epochs) == (
    1500,
    50,
    16,
    1,
  )
  assert (
    config.data.vocab_size,
    config.data.seq_len,
    config.data.max_elements_per_client,
    config.data.num_validation_examples,
  ) == (10_000, 20, 1000, 10_000)
  assert (config.model.name, config.model.embed_size, config.model.hidden_size) == (
    "word_lstm",
    96,
    670,
  )
  assert config.client_optimizer.learning_rate == pytest.approx(10**-0.5)
  assert (config.server_optimizer.name, config.server_optimizer.eps) == ("adam", 1e-5)
  assert config.server_optimizer.learning_rate == pytest.approx(0.01)
  fixtures_tff.write_stackoverflow_sqlite(
    tmp_path / stackoverflow.SQLITE_NAME, fixtures_tff.STACKOVERFLOW_SPLITS
  )
  fixtures_tff.write_word_counts(
    tmp_path / stackoverflow.WORD_COUNT_NAME, fixtures_tff.STACKOVERFLOW_WORD_COUNTS
  )
  _override(
    config,
    ("data_dir", str(tmp_path)),
    ("data.vocab_size", "5"),
    ("data.num_validation_examples", "3"),
    ("model.hidden_size", "8"),
    ("model.embed_size", "4"),
    ("rounds", "2"),
    ("clients_per_round", "2"),
    ("batch_size", "2"),
    ("eval_every", "2"),
    ("checkpoint_every", "0"),
  )
  build.bind(config)
  records = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert [r["round"] for r in records] == [1, 2]
  assert np.isfinite(records[-1]["train/loss"]) and "eval/accuracy" in records[-1]


# --- Shakespeare next-character prediction -----------------------------------------------


def test_shakespeare_config_runs_two_rounds(tmp_path):
  fixtures_tff.write_shakespeare_h5(tmp_path)
  config = _override(
    shakespeare.get_config(),
    ("data_dir", str(tmp_path)),
    ("data.seq_len", "8"),
    ("rounds", "2"),
    ("clients_per_round", "2"),
    ("model.hidden_size", "8"),
    ("model.num_layers", "1"),
    ("model.embed_size", "4"),
    ("checkpoint_every", "0"),
  )
  history = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert [r["round"] for r in history] == [1, 2]
  last = history[-1]
  assert 0.0 <= last["eval/accuracy_no_oov_no_eos"] <= 1.0 and np.isfinite(last["eval/loss"])
  assert last["eval/num_examples"] == 4  # test split: 3 + 1 sequences of 8
  assert history[0]["train/num_batches"] == 2  # 4 + 2 training sequences, batches of 4
  assert last["train/loss"] < np.log(90) + 1
