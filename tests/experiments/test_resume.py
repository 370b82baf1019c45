"""Nothing lost: checkpoints, resume after SIGKILL, corrupt checkpoints, non-finite stops."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configs import default
from experiments import overrides, train

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 8


SMALL = (
  ("model", "mlp"),
  ("rounds", str(ROUNDS)),
  ("clients_per_round", "4"),
  ("eval_every", "3"),
  ("checkpoint_every", "1"),
  ("keep_checkpoints", "3"),
)


def _config(*pairs):
  config = default.get_config()
  for key, value in (*SMALL, *pairs):
    overrides.apply(config, key, value)
  return config


def _flags():
  return [f"--config.{k}={v}" for k, v in SMALL]


def _metrics(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [
    {k: v for k, v in json.loads(line).items() if k not in train.DIAGNOSTIC_KEYS} for line in lines
  ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  train.train_and_evaluate(_config(), str(workdir))
  return _metrics(workdir)


@pytest.mark.slow
def test_a_run_killed_at_a_random_moment_resumes_to_identical_metrics(tmp_path, reference):
  rng = random.Random(int(time.time()))  # a different moment each run; the claim holds for all
  # After round 4 at the earliest: the first rounds compile and evaluate, and are 10x
  # longer than the later ones, whose length bounds the wait below.
  kill_after_rounds = rng.randint(4, ROUNDS - 3)
  command = [
    sys.executable,
    "-m",
    "experiments.main",
    "--config=configs/default.py",
    f"--workdir={tmp_path}",
    *_flags(),
  ]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  process = subprocess.Popen(
    command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 300
  seen, last_change, round_seconds = 0, time.time(), 0.0
  while time.time() < deadline and process.poll() is None:
    lines = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    if lines > seen:
      now = time.time()
      if seen:  # the shortest round of this very run so far (rounds with eval are longer)
        latest = (now - last_change) / (lines - seen)
        round_seconds = min(round_seconds, latest) if round_seconds else latest
      seen, last_change = lines, now
    if seen >= kill_after_rounds and round_seconds:
      # Somewhere inside the next round or its checkpoint; never past it, so that the
      # kill lands before the run can finish however fast the machine is.
      time.sleep(rng.uniform(0.0, 0.9) * round_seconds)
      break
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  assert len(_metrics(tmp_path)) < ROUNDS, "the run finished before it could be killed"
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "Resuming" in result.stdout
  assert _metrics(tmp_path) == reference


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, reference, caplog):
  train.train_and_evaluate(_config(), str(tmp_path))
  newest = tmp_path / "checkpoints" / str(ROUNDS)
  for f in newest.rglob("*"):
    if f.is_file():
      f.write_bytes(b"\0garbage")
  history = train.train_and_evaluate(_config(), str(tmp_path))
  assert "unreadable" in caplog.text
  assert [r["round"] for r in history][-1] == ROUNDS
  assert _metrics(tmp_path) == reference


def test_a_non_finite_model_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  train.train_and_evaluate(_config(("rounds", "2")), str(tmp_path))
  exploding = _config(
    ("rounds", "4"),
    ("client_optimizer.learning_rate", "1e30"),
    ("server_optimizer.learning_rate", "1e30"),
  )
  with pytest.raises(train.NonFiniteModelError, match="round 3: the global model has NaN"):
    train.train_and_evaluate(exploding, str(tmp_path), allow_config_change=True)
  # The good checkpoint of round 2 is still there and resumes.
  history = train.train_and_evaluate(
    _config(("rounds", "3")), str(tmp_path), allow_config_change=True
  )
  assert [r["round"] for r in history] == [1, 2, 3]


def test_a_workdir_with_another_config_refuses_to_resume(tmp_path):
  train.train_and_evaluate(_config(("rounds", "1")), str(tmp_path))
  with pytest.raises(train.WorkdirError, match="client_optimizer.learning_rate: 0.1 -> 0.5"):
    train.train_and_evaluate(
      _config(("rounds", "2"), ("client_optimizer.learning_rate", "0.5")), str(tmp_path)
    )
  # More rounds is not a different run: it resumes.
  history = train.train_and_evaluate(_config(("rounds", "2")), str(tmp_path))
  assert [r["round"] for r in history] == [1, 2]


@pytest.mark.slow
def test_error_feedback_rows_and_a_compressed_downlink_resume_exactly(tmp_path):
  """The client-state table is checkpointed with the server state: EF21's estimates of the
  clients seen before the stop are what they would have been."""
  pairs = (
    ("clients_per_round", "12"),
    ("aggregator", "encoded_mean(stages='drive', error_feedback='ef21', threshold=1000)"),
    ("broadcast", "encoded(stages='hadamard,uniform_quantize(bits=8)', threshold=1000)"),
  )
  config = _config(("rounds", "4"), *pairs)
  unbroken = train.train_and_evaluate(config, str(tmp_path / "unbroken"))
  stopped = tmp_path / "stopped"
  train.train_and_evaluate(_config(("rounds", "2"), *pairs), str(stopped))
  train.train_and_evaluate(config, str(stopped))
  after_stop = lambda records: [r for r in records if r["round"] > 2]
  # (The stopped run evaluated at its last round, 2; the unbroken one did not.)
  assert after_stop(_metrics(stopped)) == after_stop(_metrics(tmp_path / "unbroken"))
  # DRIVE: about one bit per parameter of the 2NN (199,210), 12 clients.
  assert unbroken[-1]["round_update_bits"] < 12 * 2 * 199_210
  assert unbroken[-1]["round_broadcasted_bits"] < 12 * 32 * 100_000


def test_a_workdir_from_before_a_key_was_added_still_resumes(tmp_path):
  """Keys added later, at their defaults, and the (empty) client-state table of a
  stateless aggregator do not stop an older run from resuming."""
  train.train_and_evaluate(_config(("rounds", "1")), str(tmp_path))
  path = tmp_path / "config.json"
  old = json.loads(path.read_text())
  for key in ("broadcast", "proximal_mu"):
    del old[key]
  path.write_text(json.dumps(old))
  history = train.train_and_evaluate(_config(("rounds", "2")), str(tmp_path))
  assert [r["round"] for r in history] == [1, 2]
