"""The in-memory form of a federated dataset: client id -> (x, y) numpy arrays.

Two kinds of data share the container: images for classification (x float [n, H, W, C],
y int [n]; `tokens` None) and token sequences for language modelling (x and y int
[n, T]: input ids and next-token ids; `tokens` names the special ids and
`num_classes` == tokens.vocab_size). `validate` checks what applies to each.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from fedjax_compress.data.text import TokenIds

IMAGE_SHAPE = (28, 28, 1)


class DataError(ValueError):
  """Bad or missing data; the message names the file, the client and the fix."""


@dataclasses.dataclass(frozen=True)
class FederatedData:
  """One split of a federated dataset.

  Attributes:
    clients: client id -> (x, y). Images: x float32 [n, H, W, C] in [0, 1], y int32
      [n]; one shape per dataset, IMAGE_SHAPE = (28, 28, 1) for the EMNIST family.
      Token sequences: x int32 [n, T] input ids, y int32 [n, T] the next ids, padded
      with tokens.pad.
    num_classes: size of the label space (10 for digits, 62 for all characters);
      for token sequences the number of logits, tokens.vocab_size.
    source: where the data came from, for error messages and logs.
    tokens: the special token ids of a text dataset; None for image data.
  """

  clients: Mapping[str, tuple[np.ndarray, np.ndarray]]
  num_classes: int
  source: str = ""
  tokens: TokenIds | None = None

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
    """The shape of one x: an image, e.g. IMAGE_SHAPE or (32, 32, 3) for CIFAR; (T,) for text."""
    return tuple(self.clients[self.client_ids[0]][0].shape[1:])

  def only_digits(self) -> "FederatedData":
    """TFF's `only_digits` view: labels < 10, clients left empty are dropped."""
    if self.tokens is not None:
      raise DataError(
        f"{self.source}: only_digits applies to image labels, not token "
        "sequences; drop only_digits for this dataset."
      )
    kept = {}
    for cid, (x, y) in self.clients.items():
      keep = y < 10
      if keep.any():
        kept[cid] = (x[keep], y[keep])
    return FederatedData(kept, 10, self.source)

  def validate(self) -> "FederatedData":
    """Checks shapes, dtypes, label range and empty clients; returns self.

    Images: every client's images must have the dataset's one shape [H, W, C]
    (`example_shape`: IMAGE_SHAPE for EMNIST, LEAF and the embedded digits).
    Token sequences: see `_validate_tokens`.
    """
    if not self.clients:
      raise DataError(f"{self.source}: no clients found.")
    if self.tokens is not None:
      return self._validate_tokens()
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
        raise DataError(
          f"{where}: label {int(y.max() if y.max() >= self.num_classes else y.min())} "
          f"is outside [0, {self.num_classes})."
        )
      if not np.isfinite(x).all():
        raise DataError(f"{where}: images contain NaN or Inf.")
    return self

  def _validate_tokens(self) -> "FederatedData":
    """Token sequences: integer x and y of one shape [n, T], ids in [0, vocab_size)."""
    tokens = self.tokens
    assert tokens is not None  # validate() calls this for token sequences only
    if self.num_classes != tokens.vocab_size:
      raise DataError(
        f"{self.source}: num_classes={self.num_classes} but the vocabulary has "
        f"{tokens.vocab_size} ids; set num_classes=tokens.vocab_size."
      )
    expected = self.example_shape
    for cid, (x, y) in self.clients.items():
      where = f"{self.source}, client {cid!r}"
      if len(y) == 0:
        raise DataError(f"{where}: the client has no sequences; drop it or fix the file.")
      for name, a in (("x", x), ("y", y)):
        if not np.issubdtype(a.dtype, np.integer):
          raise DataError(f"{where}: {name} has dtype {a.dtype}; token ids must be integers.")
        if a.shape[1:] != expected:
          raise DataError(
            f"{where}: {name} has sequences of shape {a.shape[1:]}, "
            f"expected {expected} like the other clients."
          )
        low, high = int(a.min()), int(a.max())
        if low < 0 or high >= tokens.vocab_size:
          raise DataError(
            f"{where}: {name} holds id {low if low < 0 else high}, outside "
            f"[0, {tokens.vocab_size}); re-tokenize with this vocabulary."
          )
      if x.shape[0] != y.shape[0]:
        raise DataError(f"{where}: {x.shape[0]} input sequences but {y.shape[0]} targets.")
    return self
