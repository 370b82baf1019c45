"""EMNIST-62 as in Reddi et al. 2021: the CNN with dropout, dropout in training, the config."""

import jax
import numpy as np
import optax
import pytest

from configs import emnist62
from experiments import build, overrides, train
from fedjax_compress import learning, models
from fedjax_compress.data import download, pipeline, tff_emnist
from tests.conftest import synthetic_data
from tests.data import fixtures


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
  """Never the real cache, never the internet: the default URL is a closed port."""
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "default_cache"))
  monkeypatch.setenv(tff_emnist.BASE_URL_ENV, "http://127.0.0.1:1/")


def test_cnn_dropout_is_reddi_et_als_cnn():
  count = lambda m: models.num_parameters(jax.eval_shape(m.init, jax.random.key(0)))
  assert count(models.create_model("cnn_dropout", 62)) == 1_206_590
  assert count(models.create_model("cnn_dropout", 10)) == 1_199_882
  model = models.create_model("cnn_dropout", 62)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  kernels = {k: v["kernel"].shape for k, v in shapes.items()}
  assert kernels == {"Conv_0": (3, 3, 1, 32), "Conv_1": (3, 3, 32, 64),
                     "Dense_0": (12 * 12 * 64, 128), "Dense_1": (128, 62)}
  with pytest.raises(ValueError, match="dense_dropout=1.0 is invalid"):
    models.create_model("cnn_dropout", 62, dense_dropout=1.0)


def test_dropout_is_drawn_from_the_step_key_in_training_only():
  model = models.create_model("cnn_dropout", 62)
  params = model.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  apply = jax.jit(model.apply, static_argnames="train")
  a = apply(params, x, train=True, rng=jax.random.key(2))
  b = apply(params, x, train=True, rng=jax.random.key(3))
  assert a.shape == (3, 62) and not np.allclose(a, b)
  np.testing.assert_array_equal(a, apply(params, x, train=True, rng=jax.random.key(2)))
  evaluation = apply(params, x, train=False, rng=jax.random.key(2))
  np.testing.assert_array_equal(evaluation, apply(params, x, train=False, rng=jax.random.key(3)))
  assert not np.allclose(evaluation, a)


@pytest.mark.parametrize("rates,differ", [((0.25, 0.5), True), ((0.0, 0.0), False)])
def test_federated_training_applies_dropout(rates, differ):
  """The same round with two round keys: different updates with dropout, the same without
  (the batches do not depend on the key)."""
  data = synthetic_data([5, 7], num_classes=62)
  model = models.create_model("cnn_dropout", 62, conv_dropout=rates[0], dense_dropout=rates[1])
  process = learning.fed_avg(model, optax.sgd(0.1), optax.sgd(1.0), strategy="sequential")
  state = process.init(jax.random.key(0))
  batch = pipeline.round_batch(data, data.client_ids, batch_size=4, seed=0, round_num=1)
  one, _ = process.next(state, batch, jax.random.key(1))
  two, _ = process.next(state, batch, jax.random.key(2))
  same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(one.params),
                                                  jax.tree.leaves(two.params)))
  assert same != differ


def test_config_is_reddi_et_als_and_runs_two_rounds(tmp_path):
  config = emnist62.get_config()
  assert (config.data.name, config.data.only_digits, config.model.name) == (
      "emnist", False, "cnn_dropout")
  assert (config.rounds, config.clients_per_round, config.batch_size, config.epochs) == (
      1500, 10, 20, 1)
  assert config.client_optimizer.learning_rate == pytest.approx(10 ** -1.5)
  assert config.server_optimizer.name == "adam"
  assert config.server_optimizer.learning_rate == pytest.approx(10 ** -2.5)
  assert config.server_optimizer.eps == 1e-4
  fedavg = emnist62.get_config("fedavg")
  assert (fedavg.client_optimizer.learning_rate, fedavg.server_optimizer.learning_rate) == (
      0.1, 1.0)
  with pytest.raises(ValueError, match="not one of"):
    emnist62.get_config("fedprox")
  fixtures.write_tff_sqlite(tmp_path / tff_emnist.SQLITE_NAME, fixtures.tff_split_clients())
  for key, value in (("data_dir", str(tmp_path)), ("rounds", "2"), ("clients_per_round", "2"),
                     ("batch_size", "4"), ("eval_every", "2"), ("checkpoint_every", "0")):
    overrides.apply(config, key, value)
  build.bind(config)
  records = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert [r["round"] for r in records] == [1, 2]
  assert records[-1]["eval/num_examples"] == 7  # all_test: 2 + 3 + 2
  assert np.isfinite(records[-1]["train/loss"])
