"""Start-up: `--help` imports neither JAX nor TensorFlow (that a run prints no TensorFlow
log lines is checked by tests/experiments/test_experiment.py's end-to-end run)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


@pytest.mark.slow
def test_help_imports_neither_tensorflow_nor_jax():
  result = subprocess.run(
    [sys.executable, "-X", "importtime", "-m", "experiments.main", "--help"],
    cwd=ROOT,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert "--workdir" in result.stdout
  imported = {
    line.split("|")[-1].strip()
    for line in result.stderr.splitlines()
    if line.startswith("import time:")
  }
  assert "tensorflow" not in imported and "jax" not in imported


@pytest.mark.slow
def test_importing_the_training_loop_does_not_import_tensorflow():
  code = "import sys, experiments.train; sys.exit('tensorflow' in sys.modules)"
  assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV).returncode == 0
