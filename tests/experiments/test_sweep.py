"""The sweep runs variants of a config for each seed and writes the frontier: the table,
the statistics across seeds, the figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import default
from experiments import sweep

REPO = Path(__file__).resolve().parents[2]


def test_parse_variant_reads_keys_and_components():
  name, pairs = sweep.parse_variant("eden2:aggregator=encoded_mean(stages='eden(bits=2)');rounds=3")
  assert name == "eden2"
  assert pairs == [("aggregator", "encoded_mean(stages='eden(bits=2)')"), ("rounds", "3")]
  _, config = sweep.variant_config(
    default.get_config(),
    "eden2:aggregator=encoded_mean(stages='eden(bits=2)');rounds=3;aggregator.threshold=5",
  )
  assert config.rounds == 3
  assert config.aggregator.to_dict() == {
    "name": "encoded_mean",
    "stages": "eden(bits=2)",
    "threshold": 5,
  }
  with pytest.raises(ValueError, match="KEY=VALUE"):
    sweep.parse_variant("x:rounds")
  with pytest.raises(ValueError, match="--variant x: config has no key 'roundz'"):
    sweep.variant_config(default.get_config(), "x:roundz=3")


def test_parse_seeds():
  assert sweep.parse_seeds("0,1,2") == [0, 1, 2]
  assert sweep.parse_seeds(" 7 ") == [7]
  for text, words in [
    ("", "empty item"),
    ("0,,1", "empty item"),
    ("0,x", "'x' is not an integer"),
    ("1.5", "not an integer"),
    ("0,-1", "-1 is negative"),
    ("3,1,3", "seed 3 is given twice"),
  ]:
    with pytest.raises(ValueError, match=words):
      sweep.parse_seeds(text)


def test_plan_puts_each_seed_in_its_own_workdir():
  base = default.get_config()
  plans = sweep.plan(base, ["a:rounds=2", "b:rounds=3"], [4, 5])
  assert [(p.name, p.seeds, [str(w) for w in p.workdirs]) for p in plans] == [
    ("a", [4, 5], ["a/seed_4", "a/seed_5"]),
    ("b", [4, 5], ["b/seed_4", "b/seed_5"]),
  ]
  assert [c.seed for c in plans[0].configs] == [4, 5] and plans[1].configs[1].rounds == 3
  # One seed, or none (the variant's config seed): ROOT/NAME, as before seeds existed.
  assert [str(w) for w in sweep.plan(base, ["a:rounds=2"], [4])[0].workdirs] == ["a"]
  (only,) = sweep.plan(base, ["a:seed=9"])
  assert only.seeds == [9] and only.configs[0].seed == 9 and str(only.workdirs[0]) == "a"
  with pytest.raises(ValueError, match="--variant a sets seed, and --seeds sets it too"):
    sweep.plan(base, ["a:seed=9"], [0, 1])
  with pytest.raises(ValueError, match="--variant a is given twice"):
    sweep.plan(base, ["a:rounds=2", "a:rounds=3"])


def test_layouts_are_not_mixed(tmp_path):
  base = default.get_config()
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "config.json").write_text("{}")
  with pytest.raises(ValueError, match="holds a one-seed run"):
    sweep.check_layout(tmp_path, sweep.plan(base, ["a:rounds=2"], [0, 1]))
  sweep.check_layout(tmp_path, sweep.plan(base, ["a:rounds=2"], [0]))  # resumes it
  (tmp_path / "b" / "seed_0").mkdir(parents=True)
  with pytest.raises(ValueError, match="holds the seed_\\* runs"):
    sweep.check_layout(tmp_path, sweep.plan(base, ["b:rounds=2"]))
  sweep.check_layout(tmp_path, sweep.plan(base, ["b:rounds=2"], [0, 1]))


def _history(accuracy, rounds=2, bits_per_round=32 * 10 * 100):
  return [
    {
      "round": r,
      "update_bits": r * bits_per_round,
      "aggregated_bits": r * (bits_per_round + 10),
      "broadcasted_bits": r * bits_per_round,
      **(
        {"eval/accuracy": accuracy, "eval/loss": 1 - accuracy, "eval/num_examples": 359.0}
        if r == rounds
        else {}
      ),
    }
    for r in range(1, rounds + 1)
  ]


def test_variant_summary_statistics():
  base = default.get_config()
  (three,) = sweep.plan(base, ["a:rounds=2"], [0, 1, 2])
  row = sweep.variant_summary(
    three, [_history(a) for a in (1.0, 2.0, 3.0)], num_params=100, clients=10
  )
  accuracy = row["metrics"]["eval/accuracy"]
  assert accuracy["n"] == 3 and accuracy["mean"] == 2 and accuracy["std"] == 1
  assert accuracy["ci95"] == pytest.approx([2 - 2.4841, 2 + 2.4841], abs=1e-4)
  assert accuracy["values"] == [1.0, 2.0, 3.0]
  assert set(row["metrics"]) == {
    "eval/accuracy",
    "eval/loss",
    "update_bits",
    "aggregated_bits",
    "broadcasted_bits",
    "bits_per_param",
    "uplink_bits_per_param",
    "broadcast_bits_per_param",
  }
  assert row["metrics"]["bits_per_param"]["mean"] == 32.0
  assert row["metrics"]["bits_per_param"]["std"] == 0.0  # several equal values: a real 0
  assert row["bits_per_param"] == 32.0 and row["final_eval_accuracy"] == 2
  assert row["num_params"] == 100 and row["clients_per_round"] == 10
  (one,) = sweep.plan(base, ["a:rounds=2"])
  row = sweep.variant_summary(one, [_history(0.5)], num_params=100, clients=10)
  assert row["metrics"]["eval/accuracy"] == {
    "n": 1,
    "mean": 0.5,
    "std": None,
    "ci95": None,
    "min": 0.5,
    "max": 0.5,
    "values": [0.5],
  }
  table = sweep.stats_table([row])
  assert "| a | eval/accuracy | 1 | 0.5000 | n/a | n/a |" in table


@pytest.mark.slow
def test_sweep_over_two_seeds_writes_the_summary(tmp_path):
  config = default.get_config()
  config.model.name, config.rounds, config.clients_per_round, config.eval_every = "mlp", 2, 2, 2
  config.checkpoint_every = 0
  result = sweep.run(
    config,
    tmp_path,
    ["float32:aggregator='mean'", "sign:aggregator=encoded_mean(stages='drive', threshold=0)"],
    seeds=[0, 1],
  )
  assert json.loads((tmp_path / "frontier.json").read_text()) == result
  assert result["seeds"] == [0, 1] and result["confidence"] == 0.95
  assert "Student's t" in result["interval"]
  rows = result["variants"]
  assert [r["variant"] for r in rows] == ["float32", "sign"]
  for row in rows:
    assert row["workdirs"] == [f"{row['variant']}/seed_0", f"{row['variant']}/seed_1"]
    for workdir, seed in zip(row["workdirs"], (0, 1)):
      assert json.loads((tmp_path / workdir / "config.json").read_text())["seed"] == seed
    accuracy = row["metrics"]["eval/accuracy"]
    assert accuracy["n"] == 2 and accuracy["std"] is not None
    low, high = accuracy["ci95"]
    assert low <= accuracy["mean"] <= high
    assert row["final_eval_accuracy"] == accuracy["mean"]
  assert rows[0]["bits_per_param"] == 32.0
  assert rows[1]["bits_per_param"] < 2  # one bit per rotated value, plus scales and padding
  assert rows[0]["num_params"] > 0
  table = (tmp_path / "frontier.md").read_text()
  assert "| sign | 2 |" in table and "| float32 | eval/accuracy | 2 |" in table
  for name in ("frontier.png", "frontier.svg", "frontier.pdf"):
    assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_bad_seeds_are_one_error_line(tmp_path):
  for argv, words in [
    (["--seeds=0,x"], "'x' is not an integer"),
    (["--seeds=0,1", "--config.seed=3"], "--config.seed and --seeds"),
  ]:
    result = subprocess.run(
      [
        sys.executable,
        "-m",
        "experiments.sweep",
        f"--root={tmp_path / 'sweep'}",
        "--variant=a:rounds=1",
        *argv,
      ],
      cwd=REPO,
      env={**os.environ, "JAX_PLATFORMS": "cpu"},
      capture_output=True,
      text=True,
      timeout=120,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert not (tmp_path / "sweep").exists()
