"""Shared test helpers: tiny models and synthetic federated data.

tests/ mirrors the packages (tests/learning/test_execution.py tests
fedjax_compress/learning/execution.py; tests/experiments/ the harness, tests/docs/ the pages'
code). The folders have no __init__.py: every test file's name is unique, and helpers are
imported from the repository root (`from tests.conftest import synthetic_data`,
`from tests.data import fixtures`), which this file puts on sys.path.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import pytest
from flax import linen as nn
from jax.experimental.compilation_cache import compilation_cache

from fedjax_compress import models
from fedjax_compress.data.federated import FederatedData

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `python -m pytest` from the root has it; a bare `pytest` not
  sys.path.insert(0, _ROOT)


class TinyCNN(nn.Module):
  """A conv net small enough to compile in a second, with the CNN's structure."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))
    x = nn.max_pool(x, (4, 4), strides=(4, 4))
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes)(x)


def synthetic_data(sizes, *, num_classes=10, seed=0) -> FederatedData:
  rng = np.random.default_rng(seed)
  clients = {
    f"client_{i:02d}": (
      rng.random((n, 28, 28, 1), dtype=np.float32),
      rng.integers(0, num_classes, n).astype(np.int32),
    )
    for i, n in enumerate(sizes)
  }
  return FederatedData(clients, num_classes, "synthetic")


@pytest.fixture(scope="session")
def tiny_model() -> models.Model:
  return models.from_flax(TinyCNN(), (28, 28, 1), 10)


@pytest.fixture(scope="session")
def small_data() -> FederatedData:
  return synthetic_data([23, 41, 7, 30, 18, 52])


@pytest.fixture(scope="session", autouse=True)
def _persistent_compilation_cache(tmp_path_factory):
  """XLA's executables cached on disk for this test process (each xdist worker has its own
  basetemp, so no two processes share the folder; subprocesses do not see it).

  A run compiles the same programs as the last run of the same shapes did:
  `train.train_and_evaluate` and `fed_avg` build new jitted closures each time, so JAX
  traces them anew, and without this cache XLA compiles them anew too, which is most of
  what a tiny run costs on CPU. With it, same program, same executable, loaded from disk.
  A cache set by the user (JAX_COMPILATION_CACHE_DIR) is left as it is.
  """
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update(
      "jax_compilation_cache_dir", str(tmp_path_factory.getbasetemp() / "jax_compilation_cache")
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture
def no_persistent_compilation_cache():
  """For tests that count XLA compilations: every program compiles, none is loaded."""
  jax.config.update("jax_enable_compilation_cache", False)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    jax.config.update("jax_enable_compilation_cache", True)
    compilation_cache.reset_cache()
