"""Config components: what the config says is what runs, or a ConfigError names the key."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default, emnist_compression, emnist_fedavg
from experiments import build, overrides, workdir
from fedjax_compress import learning, models
from fedjax_compress.data import pipeline
from test_optimizers import optimizer_steps


def _config(*pairs):
  config = default.get_config()
  for key, value in pairs:
    overrides.apply(config, key, value)
  return config


# --- finding 1: the client optimizer has its own arguments ------------------------------


def test_client_momentum_is_the_clients_not_the_servers():
  config = _config(
    ("client_optimizer", "sgd(learning_rate=0.1, momentum=0.5)"),
    ("server_optimizer", "sgd(learning_rate=1.0, momentum=0.9)"),
  )
  bound = build.bind(config)
  grads = [jnp.array([1.0, -2.0]), jnp.array([0.5, 1.0]), jnp.array([-1.0, 0.0])]
  # Momentum 0.5 by hand: trace t = g + 0.5 t, params -= 0.1 t.
  trace, expected = np.zeros(2), np.zeros(2)
  for g in grads:
    trace = np.asarray(g) + 0.5 * trace
    expected -= 0.1 * trace
  np.testing.assert_allclose(optimizer_steps(bound.client_optimizer, grads), expected, rtol=1e-6)
  server = optimizer_steps(bound.server_optimizer, grads)
  assert not np.allclose(server, optimizer_steps(optax.sgd(1.0, momentum=0.5), grads))
  np.testing.assert_allclose(server, optimizer_steps(optax.sgd(1.0, momentum=0.9), grads))


@pytest.mark.slow
def test_client_momentum_reaches_the_round(small_data, tiny_model):
  """A round with the bound client optimizer equals one with optax.sgd(0.1, momentum=0.5)."""
  bound = build.bind(
    _config(
      ("client_optimizer.momentum", "0.5"),
      ("server_optimizer", "sgd(learning_rate=1.0, momentum=0.9)"),
    )
  )
  ids = pipeline.sample_clients(small_data.client_ids, 3, seed=0, round_num=1)
  batch = pipeline.round_batch(small_data, ids, batch_size=8, seed=0, round_num=1)

  def one_round(client_opt):
    process = learning.fed_avg(
      tiny_model, client_opt, optax.sgd(1.0, momentum=0.9), strategy="sequential"
    )
    state, _ = process.next(process.init(jax.random.key(0)), batch, jax.random.key(1))
    return jax.tree.leaves(state.params)

  got = one_round(bound.client_optimizer)
  for a, b in zip(got, one_round(optax.sgd(0.1, momentum=0.5))):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(got, one_round(optax.sgd(0.1, momentum=0.9))))


# --- finding 5: keys the chosen component does not read -----------------------------------


@pytest.mark.parametrize(
  "pairs, message",
  [
    (
      [("aggregator.stages", "drive")],
      "config.aggregator: 'stages' is not an argument of aggregator 'mean'",
    ),
    ([("aggregator.name", "dp"), ("aggregator.weighted", "True")], "'weighted'"),
    ([("model.depth", "3")], "config.model: 'depth' is not an argument of model 'cnn'"),
    ([("model.num_classes", "5")], "'num_classes' is set by the run"),
    ([("data.data_dir", "/tmp")], "'data_dir' is not an argument of dataset 'sklearn_digits'"),
    ([("data.name", "leaf")], "dataset 'leaf' needs 'data_dir'"),
    ([("broadcast.stages", "drive")], "config.broadcast: 'stages'"),
    ([("client_optimizer.momentumm", "0.5")], "did you mean 'momentum'"),
    ([("client_optimizer", "none")], "clients need an optimizer"),
    ([("fed_sgd", "True")], "--config.client_optimizer=none"),
    (
      [("fed_sgd", "True"), ("client_optimizer", "none"), ("proximal_mu", "0.1")],
      "proximal_mu=0.1 is not read",
    ),
    ([("server_optimizer", "none")], "the server needs an optimizer"),
    ([("rounds", "0")], "config.rounds=0 is invalid: it must be an integer >= 1"),
    ([("strategy", "fast")], "config.strategy='fast' is invalid"),
    ([("model.name", "resnet")], "unknown model 'resnet'"),
    ([("aggregator.name", "median")], "unknown aggregator 'median'"),
  ],
)
def test_unread_and_bad_keys_stop_before_any_work(pairs, message, monkeypatch):
  def no_data(*args, **kwargs):
    raise AssertionError("data was read")

  monkeypatch.setattr("fedjax_compress.data.sources.load_embedded_digits", no_data)
  with pytest.raises(build.ConfigError, match=message):
    build.bind(_config(*pairs))


def test_an_unknown_top_level_key_in_a_config_file_is_an_error():
  config = default.get_config()
  config.roundz = 3
  with pytest.raises(build.ConfigError, match="config.roundz is not a key"):
    build.bind(config)


def test_fed_sgd_with_no_client_optimizer_binds():
  bound = build.bind(_config(("fed_sgd", "True"), ("client_optimizer", "none")))
  assert bound.client_optimizer is None


# --- overrides ---------------------------------------------------------------------------


def test_overrides_set_keys_arguments_and_whole_components():
  config = _config(
    ("rounds", "7"),
    ("client_optimizer.momentum", "0.5"),
    ("aggregator", 'encoded_mean(stages="drive", threshold=0)'),
    ("data_dir", "/data"),
  )
  assert config.rounds == 7
  assert config.client_optimizer.to_dict() == {"name": "sgd", "learning_rate": 0.1, "momentum": 0.5}
  assert config.aggregator.to_dict() == {"name": "encoded_mean", "stages": "drive", "threshold": 0}
  assert config.data.data_dir == "/data"


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("roundz", "3", "no key 'roundz' \\(did you mean 'rounds'\\?\\)"),
    ("client_momentum", "0.5", "config.client_momentum is now config.client_optimizer.momentum"),
    ("dataset", "leaf", "now config.data.name"),
    ("rounds", "three", "must be an integer"),
    ("shuffle", "maybe", "must be True or False"),
    ("rounds.x", "1", "is a value, not a component"),
    ("aggregator.bits.x", "1", "one level deep"),
    ("client_optimizer", "adam(0.1)", "NAME\\(ARGUMENT=VALUE"),
    ("client_optimizer", "adam(learning_rate=x)", "must be a literal"),
  ],
)
def test_bad_overrides_name_the_key(key, value, message):
  with pytest.raises(overrides.OverrideError, match=message):
    _config((key, value))


def test_split_argv_keeps_other_flags():
  rest, pairs = overrides.split_argv(["--workdir=x", "--config.rounds=3", "--config=a.py"])
  assert rest == ["--workdir=x", "--config=a.py"] and pairs == [("rounds", "3")]
  with pytest.raises(overrides.OverrideError, match="with '='"):
    overrides.split_argv(["--config.rounds"])


# --- registered components (the registries themselves: tests/test_registry.py) ------------


def test_a_registered_model_is_usable_by_name(tmp_path, monkeypatch):
  (tmp_path / "my_models.py").write_text(
    "from fedjax_compress import models\n"
    "@models.register_model('my_mlp')\n"
    "def my_mlp(num_classes, input_shape, hidden=7):\n"
    "  return models.from_flax(models.FedAvgMLP(num_classes=num_classes, hidden=hidden),\n"
    "                          input_shape, num_classes)\n"
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  config = _config(("imports", "my_models"), ("model", "my_mlp(hidden=5)"))
  bound = build.bind(config)
  model = bound.model(num_classes=10, input_shape=(28, 28, 1))
  params = jax.eval_shape(model.init, jax.random.key(0))
  assert models.num_parameters(params) == 28 * 28 * 5 + 5 + 5 * 5 + 5 + 5 * 10 + 10


# --- seed configs --------------------------------------------------------------------------


def test_seed_configs_build_the_tutorials_parts():
  fedavg = build.bind(emnist_fedavg.get_config())
  assert emnist_fedavg.get_config().data.to_dict() == {"name": "emnist", "only_digits": True}
  comp = emnist_compression.get_config()
  assert comp.aggregator.to_dict() == {"name": "compression", "bits": 8, "threshold": 20_000}
  grads = [jnp.array([1.0, -2.0])]
  np.testing.assert_array_equal(
    optimizer_steps(fedavg.client_optimizer, grads), optimizer_steps(optax.sgd(0.02), grads)
  )


def test_workdir_changes_ignore_keys_that_cannot_change_results():
  before = workdir.as_dict(default.get_config())
  now = _config(
    ("strategy", "vmap"),
    ("eval_every", "7"),
    ("chunk_size", "3"),
    ("client_threads", "1"),
    ("checkpoint_every", "2"),
    ("log_every", "5"),
    ("rounds", "99"),
    ("keep_checkpoints", "9"),
  )
  defaults = workdir.as_dict(default.get_config())
  assert workdir.changes(before, workdir.as_dict(now), defaults) == []
  now = _config(("aggregator.name", "compression"))
  assert workdir.changes(before, workdir.as_dict(now), defaults) == [
    "aggregator.name: 'mean' -> 'compression'"
  ]


# --- finding 9: labels outside the model's outputs -----------------------------------------


def test_a_model_with_fewer_outputs_than_classes_stops_before_training(tmp_path, monkeypatch):
  (tmp_path / "five_classes.py").write_text(
    "from fedjax_compress import models\n"
    "@models.register_model('five_class_mlp')\n"
    "def five_class_mlp(num_classes, input_shape):\n"
    "  return models.from_flax(models.FedAvgMLP(num_classes=5), input_shape, 5)\n"
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  config = _config(("imports", "five_classes"), ("model.name", "five_class_mlp"))
  from experiments import train  # pylint: disable=import-outside-toplevel

  with pytest.raises(build.ConfigError, match="the model has 5 outputs but .* has 10 classes"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_config_file_argument_picks_a_variant():
  config = overrides.load("configs/shakespeare.py:fedadam", [])
  assert config.server_optimizer.name == "adam"
  with pytest.raises(overrides.OverrideError, match="get_config\\('nadam'\\) fails"):
    overrides.load("configs/shakespeare.py:nadam", [])


def test_a_config_that_is_not_a_python_file_is_an_error(tmp_path):
  notes = tmp_path / "notes.md"
  notes.write_text("# not a config\n")
  with pytest.raises(overrides.OverrideError, match="a config is a Python file"):
    overrides.load_file(str(notes))
