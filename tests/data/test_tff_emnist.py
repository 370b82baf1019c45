"""TFF federated EMNIST: SQLite(.lzma) and legacy h5 files, cache, download, bad files."""

import lzma
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedjax_compress.data import DataError, download, load_tff_emnist, tff_emnist
from tests.data import fixtures

SPLITS = [
  ("train", True, "digits_only_train"),
  ("test", True, "digits_only_test"),
  ("train", False, "all_train"),
  ("test", False, "all_test"),
]


def assert_same_clients(data, expected, num_classes):
  assert data.num_classes == num_classes
  assert data.client_ids == tuple(sorted(expected))
  for cid, (x, y) in expected.items():
    got_x, got_y = data.clients[cid]
    assert got_x.shape == (len(y), 28, 28, 1) and got_x.dtype == np.float32
    assert got_y.dtype == np.int32
    np.testing.assert_array_equal(got_x[..., 0], x)
    np.testing.assert_array_equal(got_y, y)


# --- reading ------------------------------------------------------------------


@pytest.mark.parametrize("split,only_digits,split_name", SPLITS)
def test_sqlite_in_data_dir_reads_back_exactly(
  tff_sqlite, tff_splits, split, only_digits, split_name
):
  data = load_tff_emnist(split, only_digits=only_digits, data_dir=tff_sqlite.parent)
  assert_same_clients(data, tff_splits[split_name], 10 if only_digits else 62)
  assert split_name in data.source


def test_lzma_in_data_dir_is_decompressed_into_cache(tff_lzma_dir, tff_splits, tmp_path):
  cache = tmp_path / "cache"
  data = load_tff_emnist("train", data_dir=tff_lzma_dir, cache_dir=cache)
  assert_same_clients(data, tff_splits["digits_only_train"], 10)
  assert (cache / tff_emnist.SQLITE_NAME).exists()
  assert sorted(p.name for p in tff_lzma_dir.iterdir()) == [
    tff_emnist.LZMA_NAME,
    tff_emnist.LZMA_NAME + ".sha256",
  ]  # Hash recorded on first use.


@pytest.mark.parametrize("split,only_digits,split_name", SPLITS)
def test_legacy_h5(tmp_path, tff_splits, split, only_digits, split_name):
  folder = tmp_path / "datasets"  # Keras' cache layout: <cache_dir>/datasets/*.h5.
  folder.mkdir()
  fixtures.write_tff_h5(folder / tff_emnist.h5_name(split, only_digits), tff_splits[split_name])
  data = load_tff_emnist(split, only_digits=only_digits, data_dir=tmp_path)
  assert_same_clients(data, tff_splits[split_name], 10 if only_digits else 62)
  assert data.source.endswith(".h5")


def test_sqlite_is_preferred_over_h5(tmp_path, tff_sqlite, tff_splits):
  shutil.copy(tff_sqlite, tmp_path)
  fixtures.write_tff_h5(
    tmp_path / tff_emnist.h5_name("train", True), fixtures.make_clients({"other": 3})
  )
  assert "digits_only_train" in load_tff_emnist("train", data_dir=tmp_path).source


def test_unpacked_protos_and_unknown_fields(tmp_path, tff_splits):
  split = {"digits_only_train": tff_splits["digits_only_train"]}
  path = fixtures.write_tff_sqlite(
    tmp_path / tff_emnist.SQLITE_NAME,
    split,
    encode=lambda x, y: fixtures.example_bytes_unpacked(x, y, extra=b"\x10\x01"),
  )
  assert_same_clients(load_tff_emnist("train", data_dir=tmp_path), split["digits_only_train"], 10)
  assert path.exists()


def test_cache_dir_from_env(tmp_path, monkeypatch, tff_sqlite, tff_splits):
  cache = tmp_path / "env_cache"
  cache.mkdir()
  shutil.copy(tff_sqlite, cache)
  monkeypatch.setenv(download.CACHE_ENV, str(cache))
  data = load_tff_emnist("test", download=False)
  assert_same_clients(data, tff_splits["digits_only_test"], 10)


# --- download -----------------------------------------------------------------


def test_download_once_then_cache(http_server, tmp_path, tff_splits):
  cache = tmp_path / "cache"
  first = load_tff_emnist("train", cache_dir=cache, base_url=http_server.base_url)
  assert http_server.requests == ["/" + tff_emnist.LZMA_NAME]
  second = load_tff_emnist(
    "test", only_digits=False, cache_dir=cache, base_url=http_server.base_url
  )
  assert len(http_server.requests) == 1  # Second call read the cache.
  assert_same_clients(first, tff_splits["digits_only_train"], 10)
  assert_same_clients(second, tff_splits["all_test"], 62)
  lz = cache / tff_emnist.LZMA_NAME
  recorded = download.sidecar(lz).read_text().split()[0]
  assert recorded == download.sha256_file(lz)
  assert not [p for p in cache.iterdir() if p.name.endswith(".part")]


def test_base_url_from_env(http_server, tmp_path, monkeypatch, tff_splits):
  monkeypatch.setenv(tff_emnist.BASE_URL_ENV, http_server.base_url)
  data = load_tff_emnist("test", cache_dir=tmp_path)
  assert_same_clients(data, tff_splits["digits_only_test"], 10)
  assert len(http_server.requests) == 1


def test_corrupted_cached_download_is_detected(http_server, tmp_path):
  cache = tmp_path / "cache"
  load_tff_emnist("train", cache_dir=cache, base_url=http_server.base_url)
  (cache / tff_emnist.SQLITE_NAME).unlink()
  lz = cache / tff_emnist.LZMA_NAME
  blob = bytearray(lz.read_bytes())
  blob[len(blob) // 2] ^= 0xFF
  lz.write_bytes(bytes(blob))
  with pytest.raises(DataError, match="corrupt") as e:
    load_tff_emnist("train", cache_dir=cache, base_url=http_server.base_url)
  assert str(lz) in str(e.value)
  assert len(http_server.requests) == 1  # Reported, not silently re-downloaded.


def test_damaged_decompressed_cache_is_rebuilt_without_network(http_server, tmp_path, tff_splits):
  cache = tmp_path / "cache"
  load_tff_emnist("train", cache_dir=cache, base_url=http_server.base_url)
  db = cache / tff_emnist.SQLITE_NAME
  db.write_bytes(db.read_bytes()[:4096])  # Truncated, e.g. by a full disk.
  data = load_tff_emnist("train", cache_dir=cache, base_url=http_server.base_url)
  assert_same_clients(data, tff_splits["digits_only_train"], 10)
  assert len(http_server.requests) == 1


def test_truncated_download_leaves_nothing(http_server, tmp_path):
  http_server.truncate = True
  cache = tmp_path / "cache"
  with pytest.raises(DataError, match="could not download"):
    load_tff_emnist("train", cache_dir=cache, base_url=http_server.base_url)
  assert list(cache.iterdir()) == []


def test_unexpected_hash_warns_but_loads(http_server, tmp_path, monkeypatch, caplog, tff_splits):
  url = http_server.base_url + tff_emnist.LZMA_NAME
  monkeypatch.setitem(tff_emnist._REFERENCE_SHA256, url, "0" * 64)
  data = load_tff_emnist("train", cache_dir=tmp_path, base_url=http_server.base_url)
  assert "not the " + "0" * 64 in caplog.text
  assert_same_clients(data, tff_splits["digits_only_train"], 10)


def test_download_rejects_a_wrong_expected_hash(http_server, tmp_path):
  url = http_server.base_url + tff_emnist.LZMA_NAME
  with pytest.raises(DataError, match="differs from the published"):
    download.download(url, tmp_path / "x.lzma", expected_sha256="0" * 64)
  assert list(tmp_path.iterdir()) == []


def test_offline_error_names_url_and_target(tmp_path):
  with pytest.raises(DataError) as e:
    load_tff_emnist("train", cache_dir=tmp_path, base_url="http://127.0.0.1:1/")
  message = str(e.value)
  assert "http://127.0.0.1:1/" + tff_emnist.LZMA_NAME in message
  assert str(tmp_path / tff_emnist.LZMA_NAME) in message


def test_download_false_says_where_to_put_the_file(tmp_path):
  with pytest.raises(DataError, match="download=False") as e:
    load_tff_emnist("train", cache_dir=tmp_path, download=False)
  assert str(tmp_path / tff_emnist.LZMA_NAME) in str(e.value)
  assert tff_emnist.TFF_BASE_URL not in str(e.value)  # The env var (conftest) wins.


def test_empty_data_dir_does_not_fall_back_to_download(http_server, tmp_path):
  with pytest.raises(DataError, match="fed_emnist_digitsonly_train.h5"):
    load_tff_emnist("train", data_dir=tmp_path, base_url=http_server.base_url)
  assert http_server.requests == []


# --- bad files ----------------------------------------------------------------


def _one_split_db(tmp_path, clients, **kw):
  return fixtures.write_tff_sqlite(
    tmp_path / tff_emnist.SQLITE_NAME, {"digits_only_train": clients}, **kw
  )


def test_bad_split_argument():
  with pytest.raises(DataError, match="'train' or 'test'"):
    load_tff_emnist("validation")


def test_truncated_lzma(tmp_path, tff_lzma_dir):
  data_dir = tmp_path / "d"
  data_dir.mkdir()
  blob = (tff_lzma_dir / tff_emnist.LZMA_NAME).read_bytes()
  (data_dir / tff_emnist.LZMA_NAME).write_bytes(blob[: len(blob) // 2])
  with pytest.raises(DataError, match="truncated or corrupt") as e:
    load_tff_emnist("train", data_dir=data_dir, cache_dir=tmp_path / "cache")
  assert tff_emnist.LZMA_NAME in str(e.value)
  assert not (tmp_path / "cache" / tff_emnist.SQLITE_NAME).exists()


@pytest.mark.parametrize("keep", [0, 100, 4096])
def test_truncated_or_garbage_sqlite(tmp_path, tff_sqlite, keep):
  (tmp_path / tff_emnist.SQLITE_NAME).write_bytes(tff_sqlite.read_bytes()[:keep] or b"junk" * 50)
  with pytest.raises(DataError, match=tff_emnist.SQLITE_NAME):
    load_tff_emnist("train", data_dir=tmp_path)


def test_missing_table(tmp_path, tff_splits):
  _one_split_db(tmp_path, tff_splits["digits_only_train"], metadata=False)
  with pytest.raises(DataError, match=r"missing table\(s\) \['client_metadata'\]"):
    load_tff_emnist("train", data_dir=tmp_path)


def test_missing_split(tmp_path, tff_splits):
  _one_split_db(tmp_path, tff_splits["digits_only_train"])
  with pytest.raises(DataError, match="no split 'digits_only_test'.*digits_only_train"):
    load_tff_emnist("test", data_dir=tmp_path)


def test_wrong_pixel_count_names_client(tmp_path):
  encode = lambda x, y: fixtures.example_bytes(x.ravel()[:700], y)
  _one_split_db(tmp_path, fixtures.make_clients({"f0007_01": 2}), encode=encode)
  with pytest.raises(DataError, match=r"client 'f0007_01', example \d: .*700 floats"):
    load_tff_emnist("train", data_dir=tmp_path)


def test_label_out_of_range_names_client(tmp_path):
  clients = fixtures.make_clients({"f0001_01": 3, "f0002_02": 3})
  clients["f0002_02"][1][1] = 10  # Digits only: 10 is out of range.
  _one_split_db(tmp_path, clients)
  with pytest.raises(DataError, match=r"client 'f0002_02': label 10 \(example 1\)"):
    load_tff_emnist("train", data_dir=tmp_path)


def test_pixels_out_of_range(tmp_path):
  clients = fixtures.make_clients({"f0001_01": 2})
  clients["f0001_01"][0][0, 0, 0] = 255.0  # Unnormalised bytes, say.
  _one_split_db(tmp_path, clients)
  with pytest.raises(DataError, match=r"client 'f0001_01': pixel values span"):
    load_tff_emnist("train", data_dir=tmp_path)


def test_empty_client_in_metadata(tmp_path, tff_splits):
  path = _one_split_db(tmp_path, tff_splits["digits_only_train"])
  with sqlite3.connect(path) as con:
    con.execute("INSERT INTO client_metadata VALUES ('f0099_00', 'digits_only_train', 0)")
  with pytest.raises(DataError, match="client 'f0099_00': client_metadata lists 0"):
    load_tff_emnist("train", data_dir=tmp_path)


def test_metadata_count_mismatch(tmp_path, tff_splits):
  path = _one_split_db(tmp_path, tff_splits["digits_only_train"])
  with sqlite3.connect(path) as con:
    con.execute(
      "UPDATE client_metadata SET num_examples = num_examples + 1 WHERE client_id = 'f0001_41'"
    )
  with pytest.raises(DataError, match="client 'f0001_41': .* but client_metadata lists"):
    load_tff_emnist("train", data_dir=tmp_path)


def test_corrupt_proto_names_client(tmp_path):
  _one_split_db(
    tmp_path,
    fixtures.make_clients({"f0003_03": 1}),
    encode=lambda x, y: fixtures.example_bytes(x, y)[:-5],
  )
  with pytest.raises(DataError, match="client 'f0003_03', example 0: not a valid"):
    load_tff_emnist("train", data_dir=tmp_path)


def test_truncated_h5(tmp_path, tff_splits):
  path = fixtures.write_tff_h5(
    tmp_path / tff_emnist.h5_name("train", True), tff_splits["digits_only_train"]
  )
  path.write_bytes(path.read_bytes()[:3000])
  with pytest.raises(DataError, match=path.name):
    load_tff_emnist("train", data_dir=tmp_path)


@pytest.mark.parametrize("problem", ["pixels", "label", "empty"])
def test_bad_h5_client(tmp_path, problem):
  clients = fixtures.make_clients({"f0001_01": 3, "f0002_02": 2})
  x, y = clients["f0002_02"]
  if problem == "pixels":
    clients["f0002_02"] = (x[:, :27, :27], y)
  elif problem == "label":
    clients["f0002_02"] = (x, np.array([1, 62], np.int32))
  else:
    clients["f0002_02"] = (x[:0], y[:0])
  path = fixtures.write_tff_h5(tmp_path / tff_emnist.h5_name("train", False), clients)
  expected = {"pixels": "729 pixels each", "label": "label 62", "empty": "no examples"}[problem]
  with pytest.raises(DataError, match=f"{path.name}, client 'f0002_02': .*{expected}"):
    load_tff_emnist("train", only_digits=False, data_dir=tmp_path)


def test_h5_without_examples_group(tmp_path):
  import h5py

  path = tmp_path / tff_emnist.h5_name("test", True)
  with h5py.File(path, "w") as f:
    f.create_group("other")
  with pytest.raises(DataError, match="no 'examples' group"):
    load_tff_emnist("test", data_dir=tmp_path)


def test_lzma_of_garbage(tmp_path):
  (tmp_path / tff_emnist.LZMA_NAME).write_bytes(lzma.compress(b"not sqlite" * 100))
  with pytest.raises(DataError, match="SQLite"):
    load_tff_emnist("train", data_dir=tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_loading_imports_neither_tensorflow_nor_protobuf(tff_sqlite):
  code = (
    "import sys, fedjax_compress.data as d; "
    f"d.load_tff_emnist('train', data_dir={str(tff_sqlite.parent)!r}); "
    "bad = [m for m in ('tensorflow', 'google.protobuf', 'tensorboard') "
    "       if m in sys.modules]; "
    "sys.exit(str(bad) if bad else 0)"
  )
  result = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    cwd=Path(__file__).parents[2],
    timeout=60,
  )
  assert result.returncode == 0, result.stderr


def test_http_error_is_a_data_error(http_server, tmp_path):
  with pytest.raises(DataError, match="404"):
    load_tff_emnist("train", cache_dir=tmp_path, base_url=http_server.base_url + "missing/")
