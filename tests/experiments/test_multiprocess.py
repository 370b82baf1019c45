"""The experiment run by two CPU processes (jax.distributed over loopback, gloo) equals
the same experiment in one process.

Each worker is this file run as a script: it joins the runtime through the
FEDJAX_COORDINATOR_ADDRESS / FEDJAX_NUM_PROCESSES / FEDJAX_PROCESS_ID variables that
`experiments.train` reads, and `auto` then shards the clients over both processes.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
NUM_PROCESSES = 2
TIMEOUT_S = 240


def _config(**overrides):
  from configs import default  # pylint: disable=import-outside-toplevel

  config = default.get_config()
  # 3 clients over 2 devices: the cohort is padded with one empty client.
  config.model.name, config.rounds, config.clients_per_round, config.eval_every = "mlp", 2, 3, 1
  # Clipping's norm estimate counts clients: the padded client must not count.
  config.aggregator = default.component("mean", clipping=True)
  config.checkpoint_every = 0
  for key, value in overrides.items():
    config[key] = value
  return config


def _comparable(records):
  drop = ("round_seconds", "compiles")
  return [{k: v for k, v in r.items() if k not in drop} for r in records]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _assert_same(records, reference):
  assert len(records) == len(reference)
  for got, want in zip(_comparable(records), _comparable(reference)):
    assert set(got) == set(want)
    for key, value in want.items():
      if isinstance(value, float):
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
      else:
        assert got[key] == value, key


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  port = _free_port()
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "FEDJAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
    "FEDJAX_NUM_PROCESSES": str(NUM_PROCESSES),
    "PYTHONPATH": str(ROOT),
  }
  env.pop("XLA_FLAGS", None)
  workers = [
    subprocess.Popen(
      [sys.executable, __file__, str(tmp_path / f"p{i}")],
      cwd=ROOT,
      env={**env, "FEDJAX_PROCESS_ID": str(i)},
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(NUM_PROCESSES)
  ]
  from experiments import train  # pylint: disable=import-outside-toplevel

  try:
    reference = train.train_and_evaluate(_config(strategy="sequential"), str(tmp_path / "one"))
    deadline = time.monotonic() + TIMEOUT_S
    outputs = [w.communicate(timeout=max(deadline - time.monotonic(), 1))[0] for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
        w.wait()
  for w, out in zip(workers, outputs):
    assert w.returncode == 0, out[-4000:]
  for i in range(NUM_PROCESSES):
    records = [json.loads(line) for line in (tmp_path / f"p{i}" / "metrics.jsonl").open()]
    _assert_same(records, reference)
  assert "strategy=sharded processes=2 devices=2" in outputs[0]


def _worker(workdir: str) -> None:
  sys.path.insert(0, str(ROOT))
  from experiments import build, train  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  config = _config(strategy="auto")
  train.train_and_evaluate(config, workdir)
  bound = build.bind(config)
  model = bound.model(num_classes=10, input_shape=(28, 28, 1))
  strategy = build.build_process(config, bound, model).strategy
  print(
    f"strategy={strategy} processes={jax.process_count()} devices={jax.device_count()}", flush=True
  )


if __name__ == "__main__":
  _worker(sys.argv[1])
