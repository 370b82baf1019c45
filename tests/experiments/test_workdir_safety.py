"""No code path deletes or overwrites an earlier run unless the user asked for exactly that."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configs import default
from experiments import overrides, train

ROOT = Path(__file__).resolve().parents[2]


def _config(*pairs):
  config = default.get_config()
  for key, value in (
    ("model", "mlp"),
    ("rounds", "6"),
    ("clients_per_round", "3"),
    ("eval_every", "3"),
    ("checkpoint_every", "2"),
    *pairs,
  ):
    overrides.apply(config, key, value)
  return config


def snapshot(workdir) -> dict[str, str]:
  """sha256 of every file under `workdir`, by relative path."""
  return {
    str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(Path(workdir).rglob("*"))
    if p.is_file()
  }


@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory):
  """A finished 6-round run with the compression aggregator (finding 4's first run)."""
  workdir = tmp_path_factory.mktemp("compressed")
  train.train_and_evaluate(_config(("aggregator.name", "compression")), str(workdir))
  return workdir


def test_an_incompatible_resume_leaves_every_file_in_place(compressed_run):
  """Finding 4: aggregator=mean with --allow_config_change and more rounds."""
  before = snapshot(compressed_run)
  with pytest.raises(
    train.WorkdirError,
    match="none of the checkpoints .* restores into this config's state .*--restart",
  ):
    train.train_and_evaluate(
      _config(("aggregator.name", "mean"), ("rounds", "8")),
      str(compressed_run),
      allow_config_change=True,
    )
  assert snapshot(compressed_run) == before


def test_a_changed_config_is_refused_with_the_difference(compressed_run):
  before = snapshot(compressed_run)
  with pytest.raises(
    train.WorkdirError,
    match="aggregator.name: 'compression' -> 'mean'.*--restart.*--allow_config_change",
  ):
    train.train_and_evaluate(_config(("aggregator.name", "mean")), str(compressed_run))
  assert snapshot(compressed_run) == before


def test_keys_that_cannot_change_results_may_change_on_resume(tmp_path):
  train.train_and_evaluate(_config(("rounds", "4")), str(tmp_path))
  history = train.train_and_evaluate(
    _config(
      ("rounds", "6"),
      ("strategy", "vmap"),
      ("eval_every", "2"),
      ("chunk_size", "2"),
      ("client_threads", "1"),
      ("log_every", "3"),
      ("checkpoint_every", "3"),
    ),
    str(tmp_path),
  )
  assert [r["round"] for r in history] == list(range(1, 7))


def test_restart_moves_the_earlier_run_aside(tmp_path):
  workdir = tmp_path / "run"
  train.train_and_evaluate(_config(("rounds", "2")), str(workdir))
  before = snapshot(workdir)
  train.train_and_evaluate(
    _config(("rounds", "2"), ("client_optimizer.learning_rate", "0.05")), str(workdir), restart=True
  )
  assert snapshot(tmp_path / "run.previous-1") == before
  train.train_and_evaluate(_config(("rounds", "2")), str(workdir), restart=True)
  assert (tmp_path / "run.previous-2").is_dir()


def test_an_allowed_change_keeps_the_earlier_config_and_metrics(tmp_path):
  train.train_and_evaluate(_config(("rounds", "4")), str(tmp_path))
  before = snapshot(tmp_path)
  train.train_and_evaluate(
    _config(("rounds", "6"), ("client_optimizer.learning_rate", "0.05")),
    str(tmp_path),
    allow_config_change=True,
  )
  after = snapshot(tmp_path)
  assert after["config.1.json"] == before["config.json"]
  assert after["metrics.1.jsonl"] == before["metrics.jsonl"]


def test_metrics_without_checkpoints_are_not_rewritten_by_another_config(tmp_path):
  train.train_and_evaluate(_config(("rounds", "2"), ("checkpoint_every", "0")), str(tmp_path))
  before = snapshot(tmp_path)
  with pytest.raises(train.WorkdirError, match="no checkpoint"):
    train.train_and_evaluate(
      _config(
        ("rounds", "3"), ("checkpoint_every", "0"), ("client_optimizer.learning_rate", "0.05")
      ),
      str(tmp_path),
      allow_config_change=True,
    )
  assert snapshot(tmp_path) == before


def test_a_workdir_with_results_but_no_config_is_refused(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"round": 1}\n')
  with pytest.raises(train.WorkdirError, match="no config.json"):
    train.train_and_evaluate(_config(), str(tmp_path))
  assert (tmp_path / "metrics.jsonl").read_text() == '{"round": 1}\n'


def _file(path):
  path.write_text("x")
  return path


@pytest.mark.parametrize(
  "make, message",
  [
    (_file, "is a file, not a folder"),
    (lambda p: _file(p) / "sub", "cannot be written"),
  ],
)
def test_an_unwritable_workdir_is_refused_before_data_loads(tmp_path, monkeypatch, make, message):
  def no_data(*args, **kwargs):
    raise AssertionError("data was read")

  monkeypatch.setattr("fedjax_compress.data.sources.load_embedded_digits", no_data)
  with pytest.raises(train.WorkdirError, match=message):
    train.train_and_evaluate(_config(), str(make(tmp_path / "f")))


@pytest.mark.slow
def test_ctrl_c_says_where_the_run_resumes_and_exits_130(tmp_path):
  command = [
    sys.executable,
    "-u",
    "-m",
    "experiments.main",
    f"--workdir={tmp_path}",
    "--config.model=mlp",
    "--config.rounds=500",
    "--config.clients_per_round=3",
    "--config.checkpoint_every=1",
    "--config.eval_every=100",
  ]
  process = subprocess.Popen(
    command,
    cwd=ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 240
  for line in process.stdout:
    if line.startswith("round ") and " 3/500" in line or time.time() > deadline:
      break
  process.send_signal(signal.SIGINT)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, stderr
  assert "Traceback" not in stderr
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("interrupted: ")
  resumed_after = int(lines[0].split("after round ")[1].split(",")[0])
  assert resumed_after >= 3
  rerun = subprocess.run(
    [*command[:6], f"--config.rounds={resumed_after + 1}", *command[7:]],
    cwd=ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert rerun.returncode == 0, rerun.stderr
  assert f"Resuming {tmp_path} after round {resumed_after}." in rerun.stdout
