"""TFF's federated CIFAR-100 (data/cifar100.py): its SQLite and h5 layouts, the crops, the
errors. (ResNet-18-GN: tests/models/test_resnet.py; the config's run:
tests/experiments/test_task_configs.py.)"""

import sqlite3

import numpy as np
import pytest

from fedjax_compress.data import DataError, cifar100
from tests.data import fixtures_tff


@pytest.fixture(scope="module")
def splits():
  return {
    "train": fixtures_tff.cifar_clients({"0": 4, "1": 3, "10": 5}, seed=0),
    "test": fixtures_tff.cifar_clients({"0": 2, "1": 3}, seed=1),
  }


@pytest.fixture(scope="module")
def sqlite_dir(tmp_path_factory, splits):
  folder = tmp_path_factory.mktemp("cifar_sqlite")
  fixtures_tff.write_cifar_sqlite(folder / cifar100.SQLITE_NAME, splits)
  return folder


# --- layouts --------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_sqlite_layout_reads_back_exactly(sqlite_dir, splits, split):
  raw = cifar100.read_sqlite(sqlite_dir / cifar100.SQLITE_NAME, split)
  assert sorted(raw) == sorted(splits[split])
  for cid, (image, label, coarse) in splits[split].items():
    got = raw[cid]
    assert got[0].dtype == np.uint8 and got[0].shape == (len(label), 32, 32, 3)
    for a, b in zip(got, (image, label, coarse)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("label_shape", ["[n,1]", "[n]"])
def test_legacy_h5_layout_reads_back_exactly(tmp_path, splits, label_shape):
  folder = tmp_path / "datasets"  # Keras' cache layout: <cache_dir>/datasets/*.h5
  folder.mkdir()
  fixtures_tff.write_cifar_h5(
    folder / cifar100.h5_name("train"), splits["train"], label_shape=label_shape
  )
  data = cifar100.load_cifar100(
    "train", data_dir=tmp_path, crop_size=32, distort=False, normalize=False
  )
  assert data.source.endswith("fed_cifar100_train.h5") and data.num_classes == 100
  for cid, (image, label, _) in splits["train"].items():
    x, y = data.clients[cid]
    np.testing.assert_array_equal(x, image / np.float32(255))
    np.testing.assert_array_equal(y, label)


def test_lzma_in_data_dir_is_decompressed_into_the_cache(tmp_path, sqlite_dir, splits):
  folder = tmp_path / "data"
  folder.mkdir()
  fixtures_tff.write_lzma(sqlite_dir / cifar100.SQLITE_NAME, folder / cifar100.LZMA_NAME)
  data = cifar100.load_cifar100(
    "test", data_dir=folder, cache_dir=tmp_path / "cache", coarse_labels=True
  )
  assert (tmp_path / "cache" / cifar100.SQLITE_NAME).exists()
  assert data.num_classes == 20 and data.client_ids == ("0", "1")
  np.testing.assert_array_equal(data.clients["1"][1], splits["test"]["1"][2])


def test_loaded_data_is_tffs_preprocessing(sqlite_dir, splits):
  data = cifar100.load_cifar100("test", data_dir=sqlite_dir)
  assert data.example_shape == (24, 24, 3) and data.source.endswith(":test")
  x, y = data.clients["0"]
  assert x.dtype == np.float32 and y.dtype == np.int32
  image = splits["test"]["0"][0][:, 4:28, 4:28].astype(np.float64)  # the central 24x24
  expected = (image - image.mean(axis=(1, 2, 3), keepdims=True)) / image.std(
    axis=(1, 2, 3), keepdims=True
  )
  np.testing.assert_allclose(x, expected, atol=1e-5)
  data.validate()


# --- crops ----------------------------------------------------------------------------


def test_central_crop_is_tfs_resize_with_crop_or_pad():
  images = np.arange(2 * 32 * 32 * 3).reshape(2, 32, 32, 3)
  np.testing.assert_array_equal(cifar100.central_crop(images, 24), images[:, 4:28, 4:28])
  np.testing.assert_array_equal(cifar100.central_crop(images, 5), images[:, 13:18, 13:18])
  assert cifar100.central_crop(images, 32) is not None


def test_random_crops_are_crops_flips_seeded_and_cover_every_offset():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
  out = cifar100.random_crop_flip(images, 24, np.random.default_rng(7))
  again = cifar100.random_crop_flip(images, 24, np.random.default_rng(7))
  other = cifar100.random_crop_flip(images, 24, np.random.default_rng(8))
  np.testing.assert_array_equal(out, again)
  assert not np.array_equal(out, other)
  seen = set()
  for image, crop in zip(images, out):
    found = [
      (top, left, flip)
      for top in range(9)
      for left in range(9)
      for flip in (0, 1)
      if np.array_equal(
        crop, (lambda c: c[:, ::-1] if flip else c)(image[top : top + 24, left : left + 24])
      )
    ]
    assert found, "an output is not a (flipped) 24x24 crop of its image"
    seen.add(found[0])
  assert {t for t, _, _ in seen} == set(range(9)) and {f for _, _, f in seen} == {0, 1}


def test_per_image_standardization_matches_tf():
  images = np.random.default_rng(1).integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
  out = cifar100.per_image_standardization(images)
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-6)
  np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-5)
  flat = np.full((1, 4, 4, 3), 7, np.uint8)  # std 0: divided by 1/sqrt(48), no NaN
  np.testing.assert_array_equal(cifar100.per_image_standardization(flat), 0)


def test_training_crops_are_drawn_once_per_seed_and_test_crops_are_central(sqlite_dir):
  def load(split, seed, cid, **kw):
    return cifar100.load_cifar100(split, data_dir=sqlite_dir, seed=seed, **kw).clients[cid][0]

  np.testing.assert_array_equal(load("train", 0, "10"), load("train", 0, "10"))
  assert not np.array_equal(load("train", 0, "10"), load("train", 1, "10"))
  np.testing.assert_array_equal(
    load("train", 0, "10", distort=False), load("train", 1, "10", distort=False)
  )
  np.testing.assert_array_equal(load("test", 0, "1"), load("test", 1, "1"))


# --- errors ---------------------------------------------------------------------------


def test_user_mistakes_are_one_line_data_errors(tmp_path, sqlite_dir):
  cases = [
    (dict(split="validation"), "split must be 'train' or 'test'"),
    (dict(split="train", data_dir=sqlite_dir, crop_size=40), "crop_size=40 is invalid"),
    (
      dict(split="train", data_dir=tmp_path),
      "expected cifar100.sqlite, cifar100.sqlite.lzma or fed_cifar100_train.h5",
    ),
    (dict(split="train", data_dir=tmp_path / "nope"), "is not a folder"),
    (dict(split="train", cache_dir=tmp_path, download=False), "download=False"),
    (dict(split="train", cache_dir=tmp_path), cifar100.LZMA_NAME),  # offline: closed port
  ]
  for kwargs, message in cases:
    with pytest.raises(DataError, match=message) as e:
      cifar100.load_cifar100(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_files_name_the_file_client_and_example(tmp_path):
  good = fixtures_tff.cifar_clients({"7": 2})
  rows = fixtures_tff.cifar_rows({"train": good})
  rows[1] = (
    "train",
    "7",
    fixtures_tff.example_bytes({"image": np.zeros(100), "label": [1], "coarse_label": [1]}),
  )
  path = fixtures_tff.write_tff_sqlite(tmp_path / cifar100.SQLITE_NAME, rows)
  with pytest.raises(DataError, match=r"client '7', example 1: feature 'image' has 100 values"):
    cifar100.load_cifar100("train", data_dir=tmp_path)
  rows[1] = (
    "train",
    "7",
    fixtures_tff.example_bytes({"image": np.zeros(3072), "label": [100], "coarse_label": [1]}),
  )
  path.unlink()
  fixtures_tff.write_tff_sqlite(path, rows)
  with pytest.raises(DataError, match=r"label 100 \(example 1\) is outside \[0, 100\)"):
    cifar100.load_cifar100("train", data_dir=tmp_path)
  with sqlite3.connect(path) as con:
    con.execute("DROP TABLE client_metadata")
  with pytest.raises(DataError, match=r"missing table\(s\) \['client_metadata'\]"):
    cifar100.load_cifar100("train", data_dir=tmp_path)
  path.write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
  with pytest.raises(DataError, match="truncated or corrupt|cannot open"):
    cifar100.load_cifar100("train", data_dir=tmp_path)


# --- damaged files ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["sqlite", "h5"])
def test_damaged_files_raise_data_errors_or_load(tmp_path, layout):
  """Random truncations and byte flips: a DataError or a valid load, nothing else."""
  clients = fixtures_tff.cifar_clients({"0": 3, "1": 2}, seed=2)
  name = cifar100.SQLITE_NAME if layout == "sqlite" else cifar100.h5_name("train")
  original = tmp_path / name
  if layout == "sqlite":
    fixtures_tff.write_cifar_sqlite(original, {"train": clients})
  else:
    fixtures_tff.write_cifar_h5(original, clients)
  data = original.read_bytes()
  rng = np.random.default_rng(3)
  outcomes = {"loaded": 0, "DataError": 0}
  for trial in range(20):
    folder = tmp_path / f"trial{trial}"
    folder.mkdir()
    damaged = bytearray(data[: int(rng.integers(0, len(data)))] if rng.random() < 0.5 else data)
    for i in rng.integers(0, len(damaged), size=int(rng.integers(1, 8))) if damaged else ():
      damaged[i] ^= int(rng.integers(1, 256))
    (folder / name).write_bytes(bytes(damaged))
    try:
      cifar100.load_cifar100("train", data_dir=folder, download=False).validate()
      outcomes["loaded"] += 1
    except DataError as e:
      assert str(e) and "\n" not in str(e)
      outcomes["DataError"] += 1
  assert outcomes["DataError"] > 0, outcomes
