"""TensorFlow Datasets image classification data, partitioned into synthetic clients.

`load_federated("tfds:NAME", split)` reads TFDS's `NAME` (for example `mnist`,
`fashion_mnist`, `emnist/digits`, `cifar10`) from a TFDS data_dir, converts it
to the data layer's arrays and splits it into clients: IID (`alpha=None` or
'iid') or with a seeded Dirichlet(alpha) label skew over clients, the same
partition the embedded dataset uses (`embedded.dirichlet_partition`).

Pixel convention (the rest of the data layer uses TFF's: float32 in [0, 1],
1.0 = background):
  * single-channel datasets (the MNIST family) are inverted, `1 - pixel / 255`,
    so their white-on-black digits become ink near 0 on a 1.0 background, as in
    TFF EMNIST, LEAF and the embedded digits; a model sees the same convention
    whichever source it trains on. `invert=False` keeps TFDS's values.
  * colour datasets (CIFAR) are kept as they are, `pixel / 255`.
  * `emnist/*` images are stored transposed in TFDS; they are transposed back,
    to the orientation of TFF EMNIST and LEAF.

TensorFlow Datasets (and TensorFlow) are imported only when a tfds source is
loaded, so importing fedjax_compress stays fast.
"""

from __future__ import annotations

import os
from typing import cast

import numpy as np

from fedjax_compress.data.embedded import dirichlet_partition
from fedjax_compress.data.federated import DataError, FederatedData

PREFIX = "tfds:"
_MIN_CLIENT_SIZE = 15  # Dirichlet clients below this take examples from the largest.
_READ_BATCH = 4096


def load_tfds(
  name: str,
  split: str,
  *,
  data_dir: str | os.PathLike | None = None,
  num_clients: int = 100,
  alpha: float | str | None = 0.5,
  seed: int = 0,
  num_test_clients: int | None = None,
  download: bool = False,
  invert: bool | None = None,
) -> FederatedData:
  """Loads a TFDS image classification dataset as a federated dataset.

  Args:
    name: the TFDS name, with or without the 'tfds:' prefix and with an
      optional config and version: 'mnist', 'emnist/digits', 'cifar10:3.0.2'.
    split: 'train' or 'test' (TFDS's splits of the same names).
    data_dir: the TFDS data_dir; None means TFDS's default ($TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    num_clients: training clients.
    alpha: Dirichlet concentration of the label skew (small = more skewed);
      None or 'iid' for an IID split (a seeded shuffle cut into equal parts).
    seed: seeds the partition; train and test use distinct streams.
    num_test_clients: test clients; default max(1, num_clients // 5).
    download: download and prepare the dataset first if it is missing.
    invert: map pixels to 1 - value (1.0 = background); None means "invert
      single-channel images only" (see the module docstring).

  Returns:
    FederatedData with x float32 [n, H, W, C] in [0, 1], y int32, the
    dataset's number of classes, and client ids '{split}_{k:04d}'.
  """
  name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
  where = f"{PREFIX}{name}"
  if split not in ("train", "test"):
    raise DataError(f"{where}: split must be 'train' or 'test', not {split!r}.")
  iid = alpha is None or alpha == "iid"
  if not iid:
    assert alpha is not None  # None is iid
    try:
      alpha = float(alpha)
    except (TypeError, ValueError):
      raise DataError(
        f"{where}: alpha must be a number > 0, None or 'iid', not {alpha!r}."
      ) from None
    if not alpha > 0:
      raise DataError(f"{where}: alpha must be > 0 (or None / 'iid'), got {alpha}.")
  x, y, num_classes = _read_split(name, split, data_dir, download)
  if invert is None:
    invert = x.shape[-1] == 1
  if name.split(":")[0].split("/")[0] == "emnist":
    x = np.swapaxes(x, 1, 2)
  x = x.astype(np.float32) / 255.0
  if invert:
    x = 1.0 - x
  y = y.astype(np.int32)

  k = num_clients if split == "train" else num_test_clients or max(1, num_clients // 5)
  if not 1 <= k <= len(y):
    raise DataError(f"{where}: the {split} split has {len(y)} examples; cannot make {k} clients.")
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  if iid:
    parts = [np.sort(p) for p in np.array_split(rng.permutation(len(y)), k)]
  else:  # alpha was checked and made a float above
    parts = dirichlet_partition(y, k, cast(float, alpha), rng, min(_MIN_CLIENT_SIZE, len(y) // k))
  clients = {f"{split}_{c:04d}": (x[p], y[p]) for c, p in enumerate(parts)}
  source = f"{where}(split={split}, num_clients={k}, alpha={'iid' if iid else alpha}, seed={seed})"
  return FederatedData(clients, num_classes, source)


def _read_split(
  name: str, split: str, data_dir, download: bool
) -> tuple[np.ndarray, np.ndarray, int]:
  """(images uint8 [n, H, W, C], labels [n], num_classes) of one TFDS split."""
  try:
    import tensorflow_datasets as tfds  # Deferred: it imports TensorFlow.
  except ImportError as e:
    raise DataError(
      f"{PREFIX}{name} needs tensorflow-datasets: pip install 'tensorflow-datasets>=4.9,<5'."
    ) from e
  where = f"{PREFIX}{name}"
  _hide_accelerators_from_tensorflow()
  data_dir = os.fspath(data_dir) if data_dir is not None else None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(
      f"{where}: TFDS has no dataset {name!r} (see https://www.tensorflow.org/datasets/catalog)."
    ) from e
  keys = builder.info.supervised_keys
  label = builder.info.features[keys[1]] if keys else None
  if not keys or not hasattr(label, "num_classes"):
    raise DataError(
      f"{where}: not an (image, label) classification dataset; supervised keys are {keys}."
    )
  assert label is not None  # it has num_classes
  if download:
    builder.download_and_prepare()
  try:
    dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
  except AssertionError as e:  # TFDS's "could not find data in DIR".
    folder = data_dir or "TFDS's default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    args = repr(name) + (f", data_dir={data_dir!r}" if data_dir else "")
    raise DataError(
      f"{where}: no prepared data in {folder}. Prepare it once with "
      f'`python -c "import tensorflow_datasets as tfds; tfds.builder({args})'
      '.download_and_prepare()"` (needs network), or pass download=True; or set '
      "data_dir (config.data_dir) to the folder that holds it."
    ) from e
  except ValueError as e:  # Unknown split.
    raise DataError(f"{where}: cannot read split {split!r} ({e}).") from e
  xs, ys = [], []
  for images, labels in tfds.as_numpy(dataset.batch(_READ_BATCH)):
    xs.append(images)
    ys.append(labels)
  if not ys:
    raise DataError(f"{where}: the {split} split is empty.")
  x, y = np.concatenate(xs), np.concatenate(ys)
  if x.ndim != 4 or x.dtype != np.uint8:
    raise DataError(f"{where}: expected uint8 images [n, H, W, C], got {x.dtype} {x.shape}.")
  return x, y, int(label.num_classes)


def _hide_accelerators_from_tensorflow() -> None:
  """Keeps TFDS's TensorFlow input pipeline on the CPU, so it leaves the GPU/TPU to JAX."""
  try:
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (ImportError, RuntimeError, ValueError):  # Already initialized, or no such device type.
    pass
