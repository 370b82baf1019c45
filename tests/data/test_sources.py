"""load_federated: dispatch by name."""

import pytest

from fedjax_compress.data import DataError, load_federated, tff_emnist
from tests.data import fixtures


def test_sklearn_digits_passes_seed_and_options():
  data = load_federated("sklearn_digits", "train", seed=1, num_clients=20, alpha=1.0)
  assert len(data.clients) == 20 and "seed=1" in data.source


def test_emnist_and_leaf(tff_sqlite, tmp_path):
  emnist = load_federated("emnist", "test", data_dir=tff_sqlite.parent, only_digits=False)
  assert emnist.num_classes == 62
  fixtures.write_leaf_json(tmp_path / "test" / "a.json", fixtures.make_clients({"u": 4}))
  leaf = load_federated("leaf", "test", data_dir=tmp_path)
  assert leaf.num_classes == 10 and leaf.client_ids == ("u",)


def test_emnist_passes_download_options(tmp_path):
  with pytest.raises(DataError, match="download=False"):
    load_federated("emnist", "train", cache_dir=tmp_path, download=False)


def test_leaf_needs_data_dir():
  with pytest.raises(DataError, match="needs data_dir"):
    load_federated("leaf", "train")


def test_unknown_name_lists_valid_names():
  with pytest.raises(DataError, match="valid names: .*emnist, leaf, .*sklearn_digits"):
    load_federated("mnist", "train")


def test_tfds_without_prepared_data_says_how(tmp_path):
  with pytest.raises(DataError, match="download_and_prepare"):
    load_federated("tfds:mnist", "train", data_dir=tmp_path)


def test_emnist_default_is_offline_safe_in_tests(tmp_path):
  # conftest points the default URL at a closed port: a clear error, no internet.
  with pytest.raises(DataError, match=tff_emnist.LZMA_NAME):
    load_federated("emnist", "train", cache_dir=tmp_path)
