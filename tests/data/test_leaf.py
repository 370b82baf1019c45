"""LEAF FEMNIST JSON: generated files (json and json.gz), bad files, and the real samples."""

import os
from pathlib import Path

import numpy as np
import pytest

from fedjax_compress.data import DataError, load_leaf
from tests.data import fixtures

# Real FEMNIST lives outside the repo, in ../shared/data beside the checkout.
SHARED_DATA = Path(
  os.environ.get(
    "FEDJAX_COMPRESS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"
  )
)
REAL_NIID05 = SHARED_DATA / "femnist_leaf_niid05"
REAL_FEDLAB = SHARED_DATA / "femnist_leaf_fedlab_fixture"


@pytest.fixture
def leaf_dir(tmp_path):
  """train/ split over a .json and a .json.gz sharing user 'f0002_33'; test/ one file."""
  a = fixtures.make_clients({"f0001_12": 4, "f0002_33": 3}, 62, seed=1)
  b = fixtures.make_clients({"f0002_33": 2, "f0003_40": 5}, 62, seed=2)
  t = fixtures.make_clients({"f0001_12": 2, "f0003_40": 1}, 62, seed=3)
  fixtures.write_leaf_json(tmp_path / "train" / "all_data_0_train.json", a)
  fixtures.write_leaf_json(tmp_path / "train" / "all_data_1_train.json.gz", b)
  fixtures.write_leaf_json(tmp_path / "test" / "all_data_0_test.json.gz", t)
  (tmp_path / "train" / "README.txt").write_text("ignored")
  expected_train = {
    "f0001_12": a["f0001_12"],
    "f0003_40": b["f0003_40"],
    "f0002_33": tuple(np.concatenate([a["f0002_33"][i], b["f0002_33"][i]]) for i in range(2)),
  }
  return tmp_path, {"train": expected_train, "test": t}


def _check(data, expected):
  assert data.client_ids == tuple(sorted(expected))
  for cid, (x, y) in expected.items():
    got_x, got_y = data.clients[cid]
    assert got_x.dtype == np.float32 and got_x.shape == (len(y), 28, 28, 1)
    np.testing.assert_array_equal(got_x[..., 0], x)
    np.testing.assert_array_equal(got_y, y)


@pytest.mark.parametrize("split", ["train", "test"])
def test_reads_back_exactly_and_concatenates_users(leaf_dir, split):
  folder, expected = leaf_dir
  data = load_leaf(folder, split, only_digits=False)
  assert data.num_classes == 62
  _check(data, expected[split])


def test_only_digits(leaf_dir):
  folder, expected = leaf_dir
  data = load_leaf(folder, "train")
  assert data.num_classes == 10
  digits = {}
  for cid, (x, y) in expected["train"].items():
    if (y < 10).any():
      digits[cid] = (x[y < 10], y[y < 10])
  _check(data, digits)


def test_data_dir_may_be_the_split_folder(leaf_dir):
  folder, expected = leaf_dir
  _check(load_leaf(folder / "test", "test", only_digits=False), expected["test"])


def test_missing_split_folder(tmp_path):
  (tmp_path / "train").mkdir()
  with pytest.raises(DataError, match=r"no 'test/' folder; expected LEAF's layout"):
    load_leaf(tmp_path, "test")
  with pytest.raises(DataError, match="does not exist"):
    load_leaf(tmp_path / "nope", "train")
  with pytest.raises(DataError, match=r"no \*\.json"):
    load_leaf(tmp_path, "train")
  with pytest.raises(DataError, match="'train' or 'test'"):
    load_leaf(tmp_path, "val")


@pytest.mark.parametrize("name", ["x.json", "x.json.gz"])
def test_truncated_file_names_it(tmp_path, name):
  path = fixtures.write_leaf_json(tmp_path / "train" / name, fixtures.make_clients({"u": 3}, 62))
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(DataError, match=f"{name}: cannot read as LEAF JSON"):
    load_leaf(tmp_path, "train")


def _doc(**changes):
  doc = fixtures.leaf_document(fixtures.make_clients({"f1": 2, "f2": 3}, 62))
  for uid, entry in changes.items():
    doc["user_data"][uid].update(entry)
  return doc


@pytest.mark.parametrize(
  "doc,match",
  [
    ({"users": []}, "no 'user_data' object"),
    ([1, 2], "no 'user_data' object"),
    (_doc(f2={"x": [[0.5] * 783] * 3}), r"user 'f2': images have shape \(783,\)"),
    (_doc(f2={"x": [[0.5] * 784, [0.5] * 783, [0.5] * 784]}), "user 'f2': examples are not"),
    (_doc(f2={"y": [0, 62, 1]}), r"user 'f2': label 62 \(example 1\)"),
    (_doc(f2={"y": [0, -1, 1]}), r"user 'f2': label -1"),
    (_doc(f2={"y": ["a", "b", "c"]}), "user 'f2': labels have dtype"),
    (_doc(f2={"x": [[2.0] * 784] * 3}), "user 'f2': pixel values span"),
    (_doc(f2={"x": [], "y": []}), "user 'f2': num_samples says 3 but 0"),
    ({"users": ["f9"], "user_data": {"f9": {"x": [], "y": []}}}, "user 'f9': the client has no"),
    ({"users": ["f9"], "user_data": {}}, "user 'f9': no user_data entry"),
  ],
)
def test_bad_content_names_file_and_user(tmp_path, doc, match):
  fixtures.write_leaf_json(tmp_path / "train" / "bad_file.json.gz", document=doc)
  with pytest.raises(DataError, match=f"bad_file.json.gz.*{match}"):
    load_leaf(tmp_path, "train", only_digits=False)


@pytest.mark.slow
def test_fedlab_fixture_plain_json():
  if not REAL_FEDLAB.exists():
    pytest.skip(f"FedLab FEMNIST fixture not found at {REAL_FEDLAB}")
  data = load_leaf(REAL_FEDLAB, "train", only_digits=False)
  assert len(data.clients) == 5 and data.total_examples == 78
  assert data.only_digits().total_examples == 60
  assert load_leaf(REAL_FEDLAB, "test", only_digits=False).total_examples == 89


@pytest.mark.slow
def test_real_femnist_niid05():
  if not REAL_NIID05.exists():
    pytest.skip(f"real FEMNIST not found at {REAL_NIID05}")
  data = load_leaf(REAL_NIID05, "train", only_digits=False)
  assert len(data.clients) == 105
  assert data.total_examples == 14_708
  digits = data.only_digits()
  assert digits.total_examples == 10_596 and digits.num_classes == 10
  assert {int(y.max()) for _, y in data.clients.values()} <= set(range(62))
  x, _ = data.clients[data.client_ids[0]]
  assert x.min() >= 0.0 and x.max() <= 1.0
  assert np.median(x) > 0.9  # Mostly white background: 1.0 = background.
  data.validate()
