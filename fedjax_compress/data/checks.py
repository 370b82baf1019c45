"""Turns one client's raw arrays into checked (x, y), or a DataError that says where."""

from __future__ import annotations

import numpy as np

from fedjax_compress.data.federated import IMAGE_SHAPE, DataError

PIXELS = 28 * 28


def client_arrays(x, y, num_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
  """Checks and converts one client's examples.

  Args:
    x: pixel values, any shape holding 784 values per example, in [0, 1].
    y: integer labels in [0, num_classes).
    num_classes: size of the label space.
    where: file and client, put at the front of every error message.

  Returns:
    (x float32 [n, 28, 28, 1], y int32 [n]).
  """
  try:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
  except (ValueError, TypeError) as e:  # Ragged or non-numeric lists.
    raise DataError(f"{where}: examples are not a rectangular numeric array ({e}).") from e
  if y.ndim != 1:
    raise DataError(f"{where}: labels have shape {y.shape}, expected one label per example.")
  n = len(y)
  if n == 0:
    raise DataError(f"{where}: the client has no examples; drop it or fix the file.")
  if x.ndim == 0 or x.shape[0] != n:
    raise DataError(f"{where}: {0 if x.ndim == 0 else x.shape[0]} images but {n} labels.")
  if x.size != n * PIXELS:
    raise DataError(
      f"{where}: images have shape {x.shape[1:]} ({x.size // n} pixels each), "
      f"expected {PIXELS} (28x28)."
    )
  y = _labels(y, num_classes, where)
  x = x.reshape((n,) + IMAGE_SHAPE)
  lo, hi = float(x.min()), float(x.max())
  if not (lo >= 0.0 and hi <= 1.0):  # Also catches NaN.
    raise DataError(
      f"{where}: pixel values span [{lo}, {hi}], expected [0, 1] (1.0 = white background)."
    )
  return x, y


def _labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
  if not np.issubdtype(y.dtype, np.integer):
    if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
      raise DataError(f"{where}: labels have dtype {y.dtype}, expected integers.")
  bad = np.flatnonzero((y < 0) | (y >= num_classes))
  if bad.size:
    i = int(bad[0])
    raise DataError(f"{where}: label {y[i]} (example {i}) is outside [0, {num_classes}).")
  return y.astype(np.int32)
