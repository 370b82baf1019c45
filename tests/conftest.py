"""Shared test helpers: tiny models and synthetic federated data."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest
from flax import linen as nn

from fedjax_compress import models
from fedjax_compress.data.federated import FederatedData


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
  clients = {f"client_{i:02d}": (rng.random((n, 28, 28, 1), dtype=np.float32),
                                 rng.integers(0, num_classes, n).astype(np.int32))
             for i, n in enumerate(sizes)}
  return FederatedData(clients, num_classes, "synthetic")


@pytest.fixture(scope="session")
def tiny_model() -> models.Model:
  return models.from_flax(TinyCNN(), (28, 28, 1), 10)


@pytest.fixture(scope="session")
def small_data() -> FederatedData:
  return synthetic_data([23, 41, 7, 30, 18, 52])
