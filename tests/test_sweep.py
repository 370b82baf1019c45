"""The sweep runs variants of a config and writes the frontier table and figure."""

import json

import pytest

from configs import default
from experiments import sweep


def test_parse_variant_reads_keys_and_components():
  name, pairs = sweep.parse_variant(
      "eden2:aggregator=encoded_mean(stages='eden(bits=2)');rounds=3")
  assert name == "eden2"
  assert pairs == [("aggregator", "encoded_mean(stages='eden(bits=2)')"), ("rounds", "3")]
  _, config = sweep.variant_config(default.get_config(), "eden2:aggregator=encoded_mean("
                                   "stages='eden(bits=2)');rounds=3;aggregator.threshold=5")
  assert config.rounds == 3
  assert config.aggregator.to_dict() == {"name": "encoded_mean", "stages": "eden(bits=2)",
                                         "threshold": 5}
  with pytest.raises(ValueError, match="KEY=VALUE"):
    sweep.parse_variant("x:rounds")
  with pytest.raises(ValueError, match="--variant x: config has no key 'roundz'"):
    sweep.variant_config(default.get_config(), "x:roundz=3")


def test_sweep_writes_the_frontier(tmp_path):
  config = default.get_config()
  config.model.name, config.rounds, config.clients_per_round, config.eval_every = "mlp", 2, 3, 2
  config.checkpoint_every = 0
  rows = sweep.run(config, tmp_path, ["float32:aggregator='mean'",
                                      "sign:aggregator=encoded_mean(stages='drive', threshold=0)"])
  assert [r["variant"] for r in rows] == ["float32", "sign"]
  assert rows[0]["bits_per_param"] == 32.0
  assert rows[1]["bits_per_param"] < 2  # one bit per rotated value, plus scales and padding
  assert json.loads((tmp_path / "frontier.json").read_text()) == rows
  assert (tmp_path / "frontier.png").stat().st_size > 0
  assert "| sign |" in (tmp_path / "frontier.md").read_text()
