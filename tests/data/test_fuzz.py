"""Damaged files (random truncations and byte flips) load or raise DataError, nothing else."""

import zlib

import numpy as np
import pytest

from fedjax_compress.data import DataError, FederatedData, load_leaf, load_tff_emnist
from tests.data import fixtures

TRIALS = 25
FORMATS = {
  # name -> (file name inside the data folder, writer)
  "leaf_json": ("train/a.json", lambda p, c: fixtures.write_leaf_json(p, c)),
  "leaf_gz": ("train/a.json.gz", lambda p, c: fixtures.write_leaf_json(p, c)),
  "h5": ("fed_emnist_digitsonly_train.h5", fixtures.write_tff_h5),
  "sqlite": (
    "emnist_all.sqlite",
    lambda p, c: fixtures.write_tff_sqlite(p, {"digits_only_train": c, "digits_only_test": c}),
  ),
}


def _load(fmt, folder, cache):
  if fmt.startswith("leaf"):
    (folder / "test").mkdir(exist_ok=True)
    return load_leaf(folder, "train")
  return load_tff_emnist("train", data_dir=folder, cache_dir=cache, download=False)


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
  if rng.random() < 0.5:
    return data[: int(rng.integers(0, len(data)))]
  out = bytearray(data)
  for i in rng.integers(0, len(out), size=int(rng.integers(1, 8))):
    out[i] ^= int(rng.integers(1, 256))
  return bytes(out)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_damaged_files_raise_data_errors_or_load(tmp_path, fmt):
  name, write = FORMATS[fmt]
  clients = fixtures.make_clients({"f0001_01": 5, "f0002_02": 3}, seed=1)
  (tmp_path / "original" / name).parent.mkdir(parents=True)
  write(tmp_path / "original" / name, clients)
  data = (tmp_path / "original" / name).read_bytes()
  rng = np.random.default_rng(zlib.crc32(fmt.encode()))
  outcomes = {"loaded": 0, "DataError": 0}
  for trial in range(TRIALS):
    folder = tmp_path / f"trial{trial}"
    path = folder / name
    path.parent.mkdir(parents=True)
    path.write_bytes(_mutate(data, rng))
    try:
      result = _load(fmt, folder, tmp_path / f"cache{trial}")
    except DataError as e:
      assert str(e), "an empty error message"
      outcomes["DataError"] += 1
      continue
    assert isinstance(result, FederatedData)
    result.validate()
    outcomes["loaded"] += 1
  assert outcomes["DataError"] > 0, outcomes
