"""TFF's federated CIFAR-100: 500 training and 100 test clients of 100 images each.

The split into clients is TFF's (`tff.simulation.datasets.cifar100`): a two-level Latent
Dirichlet allocation over the 20 coarse and 100 fine labels (Reddi et al., "Adaptive
Federated Optimization", ICLR 2021). Client ids are '0'..'499' (train) and '0'..'99' (test).

Two on-disk layouts, both as TFF published them:
  * current: `cifar100.sqlite.lzma` from TFF's bucket (153,019,920 bytes). SQLite tables
    `examples(split_name, client_id, serialized_example_proto)` and
    `client_metadata(client_id, split_name, num_examples)`, splits 'train' and 'test'
    (TFF's `sql_client_data.py`); each row a tf.train.Example with `image` (an int64 list
    of the 32x32x3 uint8 pixels, row-major HWC; a 3,072-byte bytes feature is accepted
    too), `label` (int64, 0..99) and `coarse_label` (int64, 0..19) (TFF's `cifar100.py`,
    `_add_proto_parsing`).
  * legacy: `fed_cifar100_{train,test}.h5` (from TFF's `fed_cifar100.tar.bz2`), with
    `examples/<client_id>/{image uint8 [n,32,32,3], label [n] or [n,1], coarse_label}`
    (TFF's former `cifar100.py` over `HDF5ClientData`).

Preprocessing (`preprocess`) is that of TFF's CIFAR-100 task for Reddi et al.
(google-research/federated `utils/datasets/cifar100_dataset.py`, `build_image_map`): crop
to 24x24 (`crop_size`), a random crop and a random horizontal flip for training
(`distort`), the central crop for evaluation (`tf.image.resize_with_crop_or_pad`), then
`tf.image.per_image_standardization`.

Where the random crop happens: TFF draws a new crop and flip each time an example is
visited. The round batch builder (`pipeline.round_batch`) has no per-example transform,
so here the crop and flip of each training image are drawn **once, when the data is
loaded**, from (the run's `seed`, client id, example index): deterministic for a seed,
the same in every round of that run. A run sees 1 crop of each image instead of one per
visit: less augmentation than TFF's. `distort=False` uses the central crop for training
too (TFF's `distort_image=False`).
"""

from __future__ import annotations

import os
import sqlite3
import zlib
from pathlib import Path

import numpy as np

from fedjax_compress.data import download as dl
from fedjax_compress.data import example_proto as ep
from fedjax_compress.data.federated import DataError, FederatedData
from fedjax_compress.data.tff_emnist import BASE_URL_ENV, TFF_BASE_URL

SQLITE_NAME = "cifar100.sqlite"
LZMA_NAME = SQLITE_NAME + ".lzma"
IMAGE_SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3
NUM_CLASSES, NUM_COARSE_CLASSES = 100, 20
CROP_SIZE = 24
SPLITS = ("train", "test")
# Recorded by FedJAX (`fedjax/datasets/cifar100.py`, `_TFF_SQLITE_COMPRESSED_HEXDIGEST`);
# TFF publishes none. A mismatch warns; the SQLite structure is checked when read.
_REFERENCE_SHA256 = {
  TFF_BASE_URL + LZMA_NAME: "23d3916c9caa33395737ee560cc7cb77bbd05fc7b73647ee7be3a7e764172939",
}
_TABLES = ("examples", "client_metadata")
_KINDS = {1: "bytes", 2: "float", 3: "int64"}  # Feature's oneof field numbers


def h5_name(split: str) -> str:
  """The legacy h5 file of a split, e.g. 'fed_cifar100_train.h5'."""
  return f"fed_cifar100_{split}.h5"


def load_cifar100(
  split: str,
  *,
  data_dir: str | os.PathLike | None = None,
  cache_dir: str | os.PathLike | None = None,
  download: bool = True,
  base_url: str | None = None,
  crop_size: int = CROP_SIZE,
  distort: bool = True,
  normalize: bool = True,
  coarse_labels: bool = False,
  seed: int = 0,
) -> FederatedData:
  """Loads one split of TFF's federated CIFAR-100, preprocessed as for Reddi et al.

  Args:
    split: 'train' or 'test'.
    data_dir: folder holding `cifar100.sqlite[.lzma]` or `fed_cifar100_{split}.h5` (also
      looked for in `data_dir/datasets/`); when given, only it is used. An .lzma is
      decompressed into the cache.
    cache_dir: download cache; default $FEDJAX_COMPRESS_CACHE or ~/.cache/fedjax_compress.
    download: fetch `cifar100.sqlite.lzma` (~153 MB) into the cache when it is not there.
    base_url: where to fetch from; default $FEDJAX_COMPRESS_TFF_BASE_URL or TFF's bucket.
    crop_size: side of the square crop, 1..32 (TFF's 24; 32 keeps whole images).
    distort: training images get a random crop and flip, drawn once at load time from
      (seed, client, example); False: the central crop, as for the test split.
    normalize: TFF's per-image standardization; False: pixel / 255 in [0, 1].
    coarse_labels: the 20 coarse labels instead of the 100 fine ones.
    seed: the run's seed (the random crops).

  Returns:
    FederatedData: client id -> (x float32 [n, crop_size, crop_size, 3], y int32 [n]).
  """
  if split not in SPLITS:
    raise DataError(f"CIFAR-100 split must be 'train' or 'test', not {split!r}.")
  if type(crop_size) is not int or not 1 <= crop_size <= 32:  # bool is no size either
    raise DataError(
      f"cifar100: crop_size={crop_size!r} is invalid: it must be an integer "
      "in [1, 32] (TFF's 24; 32 keeps whole images)."
    )
  path = _locate(split, data_dir, cache_dir, download, base_url)
  raw = read_h5(path) if path.suffix == ".h5" else read_sqlite(path, split)
  num_classes = NUM_COARSE_CLASSES if coarse_labels else NUM_CLASSES
  clients = {}
  for cid, (images, fine, coarse) in raw.items():
    rng = client_rng(seed, cid) if split == "train" and distort else None
    x = preprocess(images, crop_size=crop_size, rng=rng, normalize=normalize)
    clients[cid] = (
      x,
      _labels(coarse if coarse_labels else fine, num_classes, f"{path}, client {cid!r}"),
    )
  where = f"{path}:{split}" if path.suffix != ".h5" else str(path)
  return FederatedData(clients, num_classes, where)


# --- preprocessing: pure functions of the images (and a generator) -------------------


def client_rng(seed: int, client_id: str) -> np.random.Generator:
  """The generator of a training client's crops: a pure function of (seed, client)."""
  return np.random.default_rng([seed, zlib.crc32(client_id.encode()), 0xC1FA])


def central_crop(images: np.ndarray, size: int) -> np.ndarray:
  """[n, H, W, C] -> [n, size, size, C], centred as `tf.image.resize_with_crop_or_pad`
  crops (offset (H - size) // 2)."""
  top, left = (images.shape[1] - size) // 2, (images.shape[2] - size) // 2
  return images[:, top : top + size, left : left + size]


def random_crop_flip(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Each image cropped at a uniform random offset and flipped left-right with
  probability 1/2 (`tf.image.random_crop` then `tf.image.random_flip_left_right`)."""
  n: int
  n, height, width = images.shape[:3]
  top = rng.integers(0, height - size + 1, n)
  left = rng.integers(0, width - size + 1, n)
  flip = rng.random(n) < 0.5
  steps = np.arange(size)
  cols = np.where(flip[:, None], left[:, None] + size - 1 - steps, left[:, None] + steps)
  rows = top[:, None] + steps
  return images[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def per_image_standardization(images: np.ndarray) -> np.ndarray:
  """`tf.image.per_image_standardization`: (x - mean) / max(std, 1 / sqrt(N)) per image,
  N its number of values; float32."""
  x = images.astype(np.float64)
  axes = tuple(range(1, x.ndim))
  mean = x.mean(axis=axes, keepdims=True)
  std = x.std(axis=axes, keepdims=True)
  floor = 1.0 / np.sqrt(np.prod(x.shape[1:]))
  return ((x - mean) / np.maximum(std, floor)).astype(np.float32)


def preprocess(
  images: np.ndarray,
  *,
  crop_size: int = CROP_SIZE,
  rng: np.random.Generator | None = None,
  normalize: bool = True,
) -> np.ndarray:
  """uint8 [n, 32, 32, 3] -> float32 [n, crop_size, crop_size, 3]: a random crop and flip
  with `rng` (training), else the central crop; then standardized (or / 255)."""
  cropped = (
    random_crop_flip(images, crop_size, rng) if rng is not None else central_crop(images, crop_size)
  )
  if normalize:
    return per_image_standardization(cropped)
  return cropped.astype(np.float32) / 255.0


def _labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
  bad = np.flatnonzero((y < 0) | (y >= num_classes))
  if bad.size:
    raise DataError(
      f"{where}: label {int(y[bad[0]])} (example {int(bad[0])}) is outside [0, {num_classes})."
    )
  return y.astype(np.int32)


# --- finding the file -----------------------------------------------------------------


def _locate(split, data_dir, cache_dir, download, base_url) -> Path:
  """data_dir if given; else the cache; else a download into the cache."""
  cache = dl.resolve_cache_dir(cache_dir)
  wanted = f"{SQLITE_NAME}, {LZMA_NAME} or {h5_name(split)}"
  if data_dir is not None:
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
      raise DataError(
        f"cifar100: data_dir {folder} is not a folder; pass the folder that holds {wanted}."
      )
    found = _find_local(folder, split, cache)
    if found is None:
      raise DataError(
        f"no TFF CIFAR-100 file in {folder}: expected {wanted} there (or in {folder / 'datasets'})."
      )
    return found
  found = _find_local(cache, split, cache)
  if found is not None:
    return found
  url = (base_url or os.environ.get(BASE_URL_ENV) or TFF_BASE_URL).rstrip("/") + "/" + LZMA_NAME
  return dl.fetch_sqlite(
    "TFF CIFAR-100",
    url,
    cache,
    SQLITE_NAME,
    download_allowed=download,
    wanted=wanted,
    reference_sha256=_REFERENCE_SHA256.get(url),
  )


def _find_local(folder: Path, split: str, cache: Path) -> Path | None:
  """The first of cifar100.sqlite, cifar100.sqlite.lzma, the split's h5 in `folder`."""
  sqlite_path, lzma_path = folder / SQLITE_NAME, folder / LZMA_NAME
  if sqlite_path.exists() and not (folder == cache and lzma_path.exists()):
    return sqlite_path
  if lzma_path.exists():  # Into the cache: data_dir may be read-only.
    return dl.decompressed(lzma_path, cache / SQLITE_NAME)
  for d in (folder, folder / "datasets"):
    if (d / h5_name(split)).exists():
      return d / h5_name(split)
  return None


# --- SQLite ---------------------------------------------------------------------------

Raw = dict  # client id -> (images uint8 [n, 32, 32, 3], labels [n], coarse labels [n])


def read_sqlite(path: Path, split: str) -> Raw:
  """Reads one split of TFF's cifar100.sqlite with one streaming query."""
  try:
    con = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
  except sqlite3.Error as e:
    raise DataError(f"{path}: cannot open as SQLite ({e}).") from e
  try:
    counts = _client_counts(con, path, split)
    raw = {
      cid: (np.empty((n,) + IMAGE_SHAPE, np.uint8), np.empty(n, np.int64), np.empty(n, np.int64))
      for cid, n in counts.items()
    }
    filled = dict.fromkeys(counts, 0)
    rows = con.execute(
      "SELECT client_id, serialized_example_proto FROM examples WHERE split_name = ?", (split,)
    )
    for cid, blob in rows:
      i = filled.get(cid)
      if i is None or i == counts[cid]:
        raise DataError(
          f"{path}, split {split!r}, client {cid!r}: more examples than the "
          f"{counts.get(cid, 0)} listed in client_metadata."
        )
      images, fine, coarse = raw[cid]
      where = f"{path}, split {split!r}, client {cid!r}, example {i}"
      images[i], fine[i], coarse[i] = parse_cifar_example(blob, where)
      filled[cid] = i + 1
  except (sqlite3.DatabaseError, UnicodeDecodeError) as e:  # text that is not UTF-8 too
    raise DataError(
      f"{path}: not a readable SQLite database ({e}); the file is truncated or "
      "corrupt. Delete it and fetch it again."
    ) from e
  finally:
    con.close()
  short = [cid for cid, n in counts.items() if filled[cid] != n]
  if short:
    raise DataError(
      f"{path}, split {split!r}, client {short[0]!r}: {filled[short[0]]} examples "
      f"but client_metadata lists {counts[short[0]]}."
    )
  return raw


def _client_counts(con: sqlite3.Connection, path: Path, split: str) -> dict[str, int]:
  tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
  missing = [t for t in _TABLES if t not in tables]
  if missing:
    raise DataError(
      f"{path}: missing table(s) {missing}; found {sorted(tables)}. Is this TFF's {SQLITE_NAME}?"
    )
  counts = dict(
    con.execute(
      "SELECT client_id, num_examples FROM client_metadata WHERE split_name = ? ORDER BY client_id",
      (split,),
    )
  )
  if not counts:
    splits = [r[0] for r in con.execute("SELECT DISTINCT split_name FROM client_metadata")]
    raise DataError(f"{path}: no split {split!r} in client_metadata; found {splits}.")
  bad = [cid for cid, n in counts.items() if not isinstance(n, int) or n <= 0]
  if bad:
    raise DataError(
      f"{path}, split {split!r}, client {bad[0]!r}: client_metadata lists "
      f"{counts[bad[0]]!r} examples."
    )
  return counts


def parse_cifar_example(blob: bytes, where: str) -> tuple[np.ndarray, int, int]:
  """One serialized tf.train.Example -> (image uint8 [32, 32, 3], label, coarse label)."""
  try:
    spans = feature_spans(bytes(blob))
    image = _image(spans.get("image"), where)
    label, coarse = (_one_int(spans.get(k), k, where) for k in ("label", "coarse_label"))
  except (ep.ProtoError, IndexError) as e:  # IndexError: a varint cut off at the end
    raise DataError(f"{where}: not a valid tf.train.Example ({e}).") from e
  return image, label, coarse


def feature_spans(buf: bytes) -> dict[str, tuple[bytes, int, int, int]]:
  """name -> (buf, kind field, start, end) of each feature's value list, undecoded.

  kind is 1 (bytes), 2 (float) or 3 (int64), as in `example_proto`. Leaving the lists
  undecoded lets `_image` decode 3,072 pixels with numpy instead of a Python loop.
  """
  spans = {}
  try:
    for field, wt, s, e in ep._fields(buf, 0, len(buf)):  # Example.features
      if field != 1 or wt != ep._LEN:
        continue
      for f2, wt2, s2, e2 in ep._fields(buf, s, e):  # Features.feature map entries
        if f2 != 1 or wt2 != ep._LEN:
          continue
        key, value = b"", None
        for f3, wt3, s3, e3 in ep._fields(buf, s2, e2):
          if f3 == 1 and wt3 == ep._LEN:
            key = buf[s3:e3]
          elif f3 == 2 and wt3 == ep._LEN:
            value = (s3, e3)
        if value is None:
          continue
        for f4, wt4, s4, e4 in ep._fields(buf, *value):  # Feature: the last kind wins
          if f4 in (1, 2, 3) and wt4 == ep._LEN:
            spans[key.decode("utf-8", "replace")] = (buf, f4, s4, e4)
  except IndexError as e:
    raise ep.ProtoError("message is truncated") from e
  return spans


def small_varints(payload: bytes) -> np.ndarray | None:
  """Decodes a packed run of varints below 2^14 (one or two bytes each) with numpy;
  None if a value needs more bytes. Raises ProtoError if the run is cut short."""
  b = np.frombuffer(payload, np.uint8)
  if b.size == 0:
    return np.zeros(0, np.int64)
  ends = np.flatnonzero(b < 0x80)
  if ends.size == 0 or ends[-1] != b.size - 1:
    raise ep.ProtoError("packed varints end inside a value (truncated?)")
  starts = np.concatenate([[0], ends[:-1] + 1])
  lengths = ends - starts + 1
  if lengths.max() > 2:
    return None
  low = (b & 0x7F).astype(np.int64)
  values = low[starts]
  two = lengths == 2
  values[two] |= low[ends[two]] << 7
  return values


def _image(span, where: str) -> np.ndarray:
  if span is None:
    raise DataError(
      f"{where}: no feature 'image'; TFF's CIFAR-100 examples have image, label and coarse_label."
    )
  buf, kind, s, e = span
  values = None
  if kind == 3:  # int64 list, as TFF writes it: one packed run, else the general decoder
    fields = ep._fields(buf, s, e)
    if len(fields) == 1 and fields[0][:2] == (1, ep._LEN):
      values = small_varints(buf[fields[0][2] : fields[0][3]])
    if values is None:
      values = np.array(ep._int64_list(buf, s, e), np.int64)
  elif kind == 1:  # bytes list: one raw uint8 buffer
    raws = ep._bytes_list(buf, s, e)
    if len(raws) == 1:
      values = np.frombuffer(raws[0], np.uint8)
  if values is None or values.size != PIXELS:
    count = "?" if values is None else values.size
    raise DataError(
      f"{where}: feature 'image' has {count} values ({_KINDS[kind]}), expected "
      f"{PIXELS} (32x32x3 uint8 as int64s or one 3072-byte string)."
    )
  if values.dtype != np.uint8 and (values.min() < 0 or values.max() > 255):
    raise DataError(
      f"{where}: image values span [{values.min()}, {values.max()}], expected [0, 255]."
    )
  return values.astype(np.uint8).reshape(IMAGE_SHAPE)


def _one_int(span, name: str, where: str) -> int:
  if span is None or span[1] != 3:
    got = "nothing" if span is None else _KINDS[span[1]]
    raise DataError(f"{where}: feature {name!r} should be one int64, got {got}.")
  buf, _, s, e = span
  values = ep._int64_list(buf, s, e)
  if len(values) != 1:
    raise DataError(f"{where}: feature {name!r} should be one int64, got {values!r}.")
  return values[0]


# --- legacy h5 ------------------------------------------------------------------------


def read_h5(path: Path) -> Raw:
  """Reads TFF's legacy fed_cifar100_{train,test}.h5: examples/<client>/{image, label,
  coarse_label}."""
  import h5py  # Deferred: only this layout needs it.

  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise DataError(
      f"{path}: cannot open as HDF5 ({e}); the file is truncated or not an h5 "
      "file. Delete it and fetch it again."
    ) from e
  raw = {}
  try:
    with f:
      group = f.get("examples")
      if not isinstance(group, h5py.Group):
        raise DataError(f"{path}: no 'examples' group; found {sorted(f.keys())}.")
      for cid in group:
        where = f"{path}, client {cid!r}"
        try:
          arrays = [group[cid][k][()] for k in ("image", "label", "coarse_label")]
        except (KeyError, OSError, ValueError, TypeError, RuntimeError, AttributeError) as e:
          raise DataError(f"{where}: cannot read image/label/coarse_label ({e}).") from e
        raw[cid] = _h5_client(arrays[0], arrays[1], arrays[2], where)
  except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(
      f"{path}: cannot read the h5 file ({e}); it is truncated or corrupt. "
      "Delete it and fetch it again."
    ) from e
  if not raw:
    raise DataError(f"{path}: the 'examples' group holds no clients.")
  return raw


def _h5_client(image, label, coarse, where: str):
  image = np.asarray(image)
  n = image.shape[0] if image.ndim == 4 else -1
  if image.shape[1:] != IMAGE_SHAPE or n <= 0:
    raise DataError(f"{where}: images have shape {image.shape}, expected [n, 32, 32, 3].")
  if not np.issubdtype(image.dtype, np.integer) or image.min() < 0 or image.max() > 255:
    raise DataError(f"{where}: images are {image.dtype}, expected uint8 pixels in [0, 255].")
  labels = []
  for name, y in (("label", label), ("coarse_label", coarse)):
    y = np.asarray(y)
    if y.size != n or not np.issubdtype(y.dtype, np.integer):
      raise DataError(
        f"{where}: {name} has shape {y.shape} and dtype {y.dtype}, expected {n} integers."
      )
    labels.append(y.reshape(n).astype(np.int64))
  return image.astype(np.uint8), labels[0], labels[1]
