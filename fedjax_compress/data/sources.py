"""One entry point that picks a federated dataset by name."""

from __future__ import annotations

import os

from fedjax_compress.data.embedded import load_embedded_digits
from fedjax_compress.data.federated import DataError, FederatedData
from fedjax_compress.data.leaf import load_leaf
from fedjax_compress.data.tff_emnist import load_tff_emnist

SOURCE_NAMES = ("emnist", "leaf", "sklearn_digits")


def load_federated(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
                   only_digits: bool = True, cache_dir: str | os.PathLike | None = None,
                   seed: int = 0, **kw) -> FederatedData:
  """Loads split 'train' or 'test' of a named federated dataset.

  Names:
    emnist: TFF's federated EMNIST (`load_tff_emnist`; kw: download, base_url).
    leaf: LEAF FEMNIST JSON under data_dir (`load_leaf`; data_dir required).
    sklearn_digits: scikit-learn's digits, offline (`load_embedded_digits`;
      seed and kw: num_clients, alpha, num_test_clients; always 10 classes,
      data_dir and cache_dir unused).
    tfds:NAME: a TensorFlow Datasets image classification dataset (mnist,
      fashion_mnist, emnist/digits, cifar10, ...) from the TFDS data_dir, split
      into synthetic clients (`load_tfds`; seed and kw: num_clients, alpha
      (None or 'iid' for IID), num_test_clients, download, invert;
      only_digits and cache_dir unused: pick the TFDS config, e.g. emnist/digits).
  `seed` only affects sklearn_digits and tfds: the other sources have natural clients.
  """
  if name.startswith("tfds:"):
    from fedjax_compress.data.tfds_source import load_tfds  # TFDS itself loads lazily.
    return load_tfds(name, split, data_dir=data_dir, seed=seed, **kw)
  if name == "emnist":
    return load_tff_emnist(split, only_digits=only_digits, data_dir=data_dir,
                           cache_dir=cache_dir, **kw)
  if name == "leaf":
    if data_dir is None:
      raise DataError("the 'leaf' source needs data_dir=: a folder with LEAF FEMNIST "
                      "train/ and test/ folders of *.json[.gz] files.")
    return load_leaf(data_dir, split, only_digits=only_digits, **kw)
  if name == "sklearn_digits":
    return load_embedded_digits(split, seed=seed, **kw)
  raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(SOURCE_NAMES)} "
                  "(and tfds:NAME, e.g. tfds:mnist, tfds:cifar10).")
