"""The offline default: scikit-learn's handwritten digits, made federated.

`sklearn.datasets.load_digits` ships 1,797 real 8x8 handwritten digits (values
0..16) inside the scikit-learn wheel, so this works with no network. Each image
is resized bilinearly to 20x20 and centred in 28x28 (MNIST puts digits in a
20x20 box), then mapped to TFF's convention: 1.0 = background, ink near 0.

A fixed stratified 20% is held out as the test set (fixed so every seed is
scored on the same examples); each split is partitioned into clients with a
seeded Dirichlet(alpha) over labels, then rebalanced so no client is tiny.
"""

from __future__ import annotations

import functools

import numpy as np

from fedjax_compress.data.federated import DataError, FederatedData

NAME = "sklearn_digits"
TEST_FRACTION = 0.2
_SPLIT_SEED = 20240601  # The train/test split does not change with `seed`.
_MIN_CLIENT_SIZE = 15
_BOX, _SIDE = 20, 28


def load_embedded_digits(
  split: str,
  *,
  num_clients: int = 50,
  alpha: float = 0.5,
  seed: int = 0,
  num_test_clients: int | None = None,
) -> FederatedData:
  """Loads scikit-learn's digits as a non-IID federated dataset.

  Args:
    split: 'train' (1,437 examples) or 'test' (360).
    num_clients: training clients (default 50: ~29 examples each, at least 15).
    alpha: Dirichlet concentration over labels; small = more skewed.
    seed: seeds the client partition (the train/test split is fixed).
    num_test_clients: test clients; default max(1, num_clients // 5).

  Returns:
    FederatedData with 10 classes; client ids '{split}_{k:03d}'.
  """
  if split not in ("train", "test"):
    raise DataError(f"{NAME} split must be 'train' or 'test', not {split!r}.")
  if alpha <= 0:
    raise DataError(f"{NAME}: alpha must be > 0, got {alpha}.")
  x, y = _images_and_labels()
  idx = _train_test_indices(y)[0 if split == "train" else 1]
  k = num_clients if split == "train" else num_test_clients or max(1, num_clients // 5)
  if not 1 <= k <= len(idx):
    raise DataError(f"{NAME}: {split} has {len(idx)} examples; cannot make {k} clients.")
  # Distinct streams for train and test, both determined by `seed`.
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  parts = dirichlet_partition(y[idx], k, alpha, rng, min(_MIN_CLIENT_SIZE, len(idx) // k))
  clients = {f"{split}_{c:03d}": (x[idx[p]], y[idx[p]]) for c, p in enumerate(parts)}
  source = f"{NAME}(split={split}, num_clients={k}, alpha={alpha}, seed={seed})"
  return FederatedData(clients, 10, source)


def dirichlet_partition(
  labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator, min_size: int
) -> list[np.ndarray]:
  """Splits indices of `labels` into clients, label proportions ~ Dir(alpha).

  For each class, its examples are shuffled and cut by proportions drawn from
  a symmetric Dirichlet over clients. Clients below `min_size` then take
  examples from the largest client, deterministically.
  """
  buckets: list[list[int]] = [[] for _ in range(num_clients)]
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    cuts = np.cumsum(rng.dirichlet(np.full(num_clients, alpha)))[:-1] * len(members)
    for bucket, part in zip(buckets, np.split(members, cuts.astype(int))):
      bucket.extend(part.tolist())
  return [np.sort(np.array(b, dtype=np.int64)) for b in _rebalance(buckets, min_size)]


def _rebalance(buckets: list[list[int]], min_size: int) -> list[list[int]]:
  """Moves examples from the largest client to each client below min_size.

  Redrawing until every client is big enough can loop for a long time at
  small alpha; moving a few examples keeps the skew and always terminates.
  """
  for small in buckets:
    while len(small) < min_size:
      donor = max(buckets, key=len)  # First of the largest: deterministic.
      small.append(donor.pop())
  return buckets


def _train_test_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A fixed stratified split: round(20%) of each class goes to test."""
  rng = np.random.default_rng(_SPLIT_SEED)
  test = []
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    test.extend(members[: int(round(TEST_FRACTION * len(members)))].tolist())
  is_test = np.zeros(len(labels), bool)
  is_test[test] = True
  return np.flatnonzero(~is_test), np.flatnonzero(is_test)


@functools.lru_cache(maxsize=1)
def _images_and_labels() -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 digits as (x float32 [n,28,28,1] with 1.0 = background, y int32)."""
  from sklearn.datasets import load_digits  # Deferred: sklearn imports slowly.

  digits = load_digits()
  ink = upsample(digits.images / 16.0)
  x = (1.0 - ink)[..., None].astype(np.float32)
  y = digits.target.astype(np.int32)
  x.setflags(write=False)  # Cached and shared: callers get copies via indexing.
  y.setflags(write=False)
  return x, y


def upsample(images: np.ndarray) -> np.ndarray:
  """Bilinear resize of [n, h, w] ink images to 20x20, zero-padded to 28x28."""
  rows = _bilinear_matrix(images.shape[1], _BOX)
  cols = _bilinear_matrix(images.shape[2], _BOX)
  boxed = np.einsum("ij,njk,lk->nil", rows, images, cols)
  pad = (_SIDE - _BOX) // 2
  return np.clip(np.pad(boxed, ((0, 0), (pad, pad), (pad, pad))), 0.0, 1.0)


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of linear interpolation between pixel centres."""
  src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m = np.zeros((n_out, n_in))
  m[np.arange(n_out), lo] += 1 - frac
  m[np.arange(n_out), hi] += frac
  return m
