"""Start-up: `--help` imports neither JAX nor TensorFlow; a run prints no TensorFlow logs."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def test_help_imports_neither_tensorflow_nor_jax():
  result = subprocess.run([sys.executable, "-X", "importtime", "-m", "experiments.main",
                           "--help"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
  assert "--workdir" in result.stdout
  imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:")}
  assert "tensorflow" not in imported and "jax" not in imported


def test_importing_the_training_loop_does_not_import_tensorflow():
  code = "import sys, experiments.train; sys.exit('tensorflow' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV).returncode == 0


def test_a_run_prints_no_tensorflow_log_lines(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.main", f"--workdir={tmp_path}", "--config.model=mlp",
       "--config.rounds=1", "--config.clients_per_round=2"],
      cwd=ROOT, env={k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert list(tmp_path.glob("events.out.tfevents.*")), "TensorBoard events still written"
  for marker in ("oneDNN", "tensorflow/core", "cpu_feature_guard", "TF-TRT"):
    assert marker not in result.stderr + result.stdout
