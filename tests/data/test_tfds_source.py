"""tfds:NAME sources (data/tfds_source.py) on TFDS's mocked data (no download). (The
CIFAR-10 config on it: tests/experiments/test_task_configs.py.)"""

import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from fedjax_compress.data import DataError, embedded, load_federated, load_tfds  # noqa: E402
from fedjax_compress.data import tfds_source  # noqa: E402

N = 120  # mocked examples per split


def mock(num_examples=N):
  return tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE)


def known_images(shape, n=N):
  """A mock `_as_dataset` with image k = ramp over rows + k, label k % 10."""
  import tensorflow as tf

  ramp = (
    np.arange(shape[0])[:, None, None] * 255 // (shape[0] - 1) * np.ones(shape, np.int64)
  ).astype(np.uint8)

  def as_dataset(self, *args, **kwargs):
    return tf.data.Dataset.from_tensor_slices(
      {"image": np.stack([ramp] * n), "label": np.arange(n, dtype=np.int64) % 10}
    )

  return tfds.testing.mock_data(as_dataset_fn=as_dataset), ramp


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "emnist/digits"])
def test_mnist_family_arrays_and_convention(name, tmp_path):
  with mock():
    data = load_tfds(name, "train", data_dir=tmp_path, num_clients=6, seed=0).validate()
    raw = load_tfds(name, "train", data_dir=tmp_path, num_clients=6, seed=0, invert=False)
  assert data.num_classes == 10 and len(data.clients) == 6
  assert data.example_shape == (28, 28, 1) and data.total_examples == N
  for cid, (x, y) in data.clients.items():
    assert x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x, 1.0 - raw.clients[cid][0], atol=1e-6)  # 1.0 = background


def test_values_orientation_and_inversion(tmp_path):
  context, ramp = known_images((28, 28, 1))
  with context:
    mnist = load_tfds("mnist", "train", data_dir=tmp_path, num_clients=1, alpha="iid")
    emnist = load_tfds("emnist/digits", "train", data_dir=tmp_path, num_clients=1, alpha="iid")
  x, y = mnist.clients["train_0000"]
  np.testing.assert_allclose(x[0], 1.0 - ramp / 255.0, atol=1e-6)
  assert x[0, 0, 0, 0] == 1.0 and x[0, -1, 0, 0] == 0.0  # pixel 0 -> background 1.0
  np.testing.assert_array_equal(y, np.arange(N) % 10)
  # TFDS stores EMNIST transposed; the loader transposes it back.
  np.testing.assert_allclose(emnist.clients["train_0000"][0][0], np.swapaxes(x[0], 0, 1))


def test_cifar_keeps_colour_values(tmp_path):
  context, ramp = known_images((32, 32, 3))
  with context:
    data = load_tfds("cifar10", "test", data_dir=tmp_path, num_clients=10).validate()
  assert data.example_shape == (32, 32, 3) and len(data.clients) == 2  # num_clients // 5
  x = next(iter(data.clients.values()))[0]
  np.testing.assert_allclose(x[0], ramp / 255.0, atol=1e-6)


def test_iid_partition_is_balanced_and_seeded(tmp_path):
  with mock():
    a = load_tfds("mnist", "train", data_dir=tmp_path, num_clients=7, alpha=None, seed=3)
    b = load_tfds("mnist", "train", data_dir=tmp_path, num_clients=7, alpha="iid", seed=3)
    c = load_tfds("mnist", "train", data_dir=tmp_path, num_clients=7, alpha=None, seed=4)
  sizes = [len(y) for _, y in a.clients.values()]
  assert max(sizes) - min(sizes) <= 1 and sum(sizes) == N
  assert "alpha=iid" in a.source and "seed=3" in a.source
  for cid in a.client_ids:
    np.testing.assert_array_equal(a.clients[cid][0], b.clients[cid][0])
  assert any(not np.array_equal(a.clients[k][1], c.clients[k][1]) for k in a.client_ids)


def test_dirichlet_partition_reuses_embedded_and_skews_labels(tmp_path):
  assert tfds_source.dirichlet_partition is embedded.dirichlet_partition
  context, _ = known_images((28, 28, 1), n=1000)
  with context:
    skewed = load_tfds("mnist", "train", data_dir=tmp_path, num_clients=10, alpha=0.1)
    again = load_tfds("mnist", "train", data_dir=tmp_path, num_clients=10, alpha="0.1")
    iid = load_tfds("mnist", "train", data_dir=tmp_path, num_clients=10, alpha=None)

  def mean_distinct_labels(data):
    return np.mean([len(np.unique(y)) for _, y in data.clients.values()])

  assert mean_distinct_labels(skewed) < mean_distinct_labels(iid) == 10
  assert skewed.total_examples == 1000
  for cid in skewed.client_ids:
    np.testing.assert_array_equal(skewed.clients[cid][1], again.clients[cid][1])


def test_load_federated_dispatches_tfds(tmp_path):
  with mock():
    data = load_federated(
      "tfds:mnist", "test", data_dir=tmp_path, seed=1, num_clients=20, num_test_clients=3
    )
  assert len(data.clients) == 3 and data.source.startswith("tfds:mnist(split=test")


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(split="validation"), "split must be 'train' or 'test'"),
    (dict(alpha=0.0), "alpha must be > 0"),
    (dict(alpha="skewed"), "alpha must be a number"),
    (dict(num_clients=N + 1), "cannot make 121 clients"),
  ],
)
def test_bad_arguments(kwargs, match, tmp_path):
  kwargs = {"split": "train", **kwargs}
  with mock(), pytest.raises(DataError, match=match):
    load_tfds("mnist", data_dir=tmp_path, **kwargs)


def test_missing_data_says_how_to_prepare_it(tmp_path):
  with pytest.raises(DataError, match=r"no prepared data in .*download_and_prepare"):
    load_federated("tfds:mnist", "train", data_dir=tmp_path)


def test_unknown_tfds_name(tmp_path):
  with pytest.raises(DataError, match="TFDS has no dataset 'no_such_dataset'"):
    load_federated("tfds:no_such_dataset", "train", data_dir=tmp_path)


@pytest.mark.slow
def test_importing_the_package_does_not_import_tfds():
  code = (
    "import sys, fedjax_compress.data, fedjax_compress.data.tfds_source; "
    "sys.exit('tensorflow_datasets' in sys.modules)"
  )
  assert subprocess.run([sys.executable, "-c", code]).returncode == 0
