"""The in-memory form of a federated dataset: client id -> (x, y) numpy arrays."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

IMAGE_SHAPE = (28, 28, 1)


class DataError(ValueError):
  """Bad or missing data; the message names the file, the client and the fix."""


@dataclasses.dataclass(frozen=True)
class FederatedData:
  """One split of a federated dataset.

  Attributes:
    clients: client id -> (x float32 [n, H, W, C] in [0, 1], y int32 [n]); one
      shape per dataset, IMAGE_SHAPE = (28, 28, 1) for the EMNIST family.
    num_classes: size of the label space (10 for digits, 62 for all characters).
    source: where the data came from, for error messages and logs.
  """
  clients: Mapping[str, tuple[np.ndarray, np.ndarray]]
  num_classes: int
  source: str = ""

  @property
  def client_ids(self) -> tuple[str, ...]:
    return tuple(sorted(self.clients))

  def num_examples(self, client_id: str) -> int:
    return len(self.clients[client_id][1])

  @property
  def total_examples(self) -> int:
    return sum(len(y) for _, y in self.clients.values())

  @property
  def example_shape(self) -> tuple[int, ...]:
    """The shape of one image, e.g. IMAGE_SHAPE (28, 28, 1) or (32, 32, 3) for CIFAR."""
    return tuple(self.clients[self.client_ids[0]][0].shape[1:])

  def only_digits(self) -> "FederatedData":
    """TFF's `only_digits` view: labels < 10, clients left empty are dropped."""
    kept = {}
    for cid, (x, y) in self.clients.items():
      keep = y < 10
      if keep.any():
        kept[cid] = (x[keep], y[keep])
    return FederatedData(kept, 10, self.source)

  def validate(self) -> "FederatedData":
    """Checks shapes, dtypes, label range and empty clients; returns self.

    Every client's images must have the dataset's one shape [H, W, C]
    (`example_shape`: IMAGE_SHAPE for EMNIST, LEAF and the embedded digits).
    """
    if not self.clients:
      raise DataError(f"{self.source}: no clients found.")
    expected = self.example_shape
    if len(expected) != 3:
      raise DataError(f"{self.source}: images have shape {expected}, expected [H, W, C].")
    for cid, (x, y) in self.clients.items():
      where = f"{self.source}, client {cid!r}"
      if len(y) == 0:
        raise DataError(f"{where}: the client has no examples; drop it or fix the file.")
      if x.shape[1:] != expected:
        raise DataError(f"{where}: images have shape {x.shape[1:]}, expected {expected}.")
      if x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels.")
      if y.min() < 0 or y.max() >= self.num_classes:
        raise DataError(f"{where}: label {int(y.max() if y.max() >= self.num_classes else y.min())} "
                        f"is outside [0, {self.num_classes}).")
      if not np.isfinite(x).all():
        raise DataError(f"{where}: images contain NaN or Inf.")
    return self
