"""One entry point that picks a federated dataset by name, and the dataset registry.

Configs name a dataset and its loader's arguments (`config.data`); the registry checks
those arguments against the loader's signature before anything is read. A loader is
`loader(split, **arguments) -> FederatedData`; it receives the run's `seed` when its
signature names it (sources that split data into clients).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

from fedjax_compress.data.cifar100 import load_cifar100
from fedjax_compress.data.embedded import load_embedded_digits
from fedjax_compress.data.federated import DataError, FederatedData
from fedjax_compress.data.leaf import load_leaf
from fedjax_compress.data.shakespeare import load_shakespeare
from fedjax_compress.data.stackoverflow import load_stackoverflow
from fedjax_compress.data.tff_emnist import load_tff_emnist
from fedjax_compress.registry import Registry

TFDS_PREFIX = "tfds:"
dataset_registry: Registry[FederatedData] = Registry("dataset", context=("split", "seed"))
dataset_registry.register("emnist", load_tff_emnist)
dataset_registry.register("leaf", load_leaf)
dataset_registry.register("sklearn_digits", load_embedded_digits)
dataset_registry.register("shakespeare", load_shakespeare)
dataset_registry.register("cifar100", load_cifar100)
dataset_registry.register("stackoverflow", load_stackoverflow)


def register_dataset(name: str, loader: Callable[..., FederatedData] | None = None):
  """Makes `loader(split, **arguments) -> FederatedData` a dataset configs can name.

  Usable as a decorator. `config.data = {name, ...arguments}` then loads with it.
  """
  return dataset_registry.register(name, loader)


def bind_dataset(
  name: str, arguments: Mapping[str, Any] | None = None, *, seed: int = 0
) -> Callable[[str], FederatedData]:
  """`load(split) -> FederatedData` for the named dataset, its arguments checked now.

  `tfds:NAME` is any TensorFlow Datasets image classification set (`load_tfds`).
  """
  if name.startswith(TFDS_PREFIX):
    from fedjax_compress.data.tfds_source import load_tfds  # TFDS itself loads lazily.

    registry: Registry[FederatedData] = Registry("dataset", context=("split", "seed"))
    registry.register("tfds", functools.partial(load_tfds, name))
    name = "tfds"
  else:
    registry = dataset_registry
  load = registry.bind(name, arguments, split="train", seed=seed)  # checks the arguments
  return lambda split: load(split=split)


SOURCE_NAMES = ("emnist", "leaf", "sklearn_digits")  # built in; dataset_registry has all


def load_federated(
  name: str,
  split: str,
  *,
  data_dir: str | os.PathLike | None = None,
  only_digits: bool = True,
  cache_dir: str | os.PathLike | None = None,
  seed: int = 0,
  **kw,
) -> FederatedData:
  """Loads split 'train' or 'test' of a named federated dataset.

  Names:
    any registered name (shakespeare, cifar100, stackoverflow, ...): its loader, given
      data_dir and cache_dir when set and `kw` (checked against its signature);
      `only_digits` is for the EMNIST sources only.
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
    return load_tff_emnist(
      split, only_digits=only_digits, data_dir=data_dir, cache_dir=cache_dir, **kw
    )
  if name == "leaf":
    if data_dir is None:
      raise DataError(
        "the 'leaf' source needs data_dir=: a folder with LEAF FEMNIST "
        "train/ and test/ folders of *.json[.gz] files."
      )
    return load_leaf(data_dir, split, only_digits=only_digits, **kw)
  if name == "sklearn_digits":
    return load_embedded_digits(split, seed=seed, **kw)
  if name in dataset_registry:  # registered loaders: their own arguments, checked
    given = {"data_dir": data_dir, "cache_dir": cache_dir, **kw}
    return dataset_registry.create(
      name, {k: v for k, v in given.items() if v is not None}, split=split, seed=seed
    )
  raise DataError(
    f"unknown dataset {name!r}; valid names: {', '.join(dataset_registry.names())} "
    "(and tfds:NAME, e.g. tfds:mnist, tfds:cifar10)."
  )
