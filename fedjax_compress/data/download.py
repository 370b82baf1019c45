"""Download-once file cache: atomic writes, sha256 sidecars, lzma decompression.

Every downloaded file `F` gets `F.sha256` ("<hex>  <name>", as sha256sum writes
it). A later use re-hashes `F` and compares, so a corrupted or half-copied cache
is reported instead of being parsed. A decompressed file `D` gets `D.source`
recording the sha256 of its compressed source and its own size, so it is
rebuilt when either changes (hashing a multi-GB output on every load would cost
more than the load).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import lzma
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fedjax_compress.data.federated import DataError

CACHE_ENV = "FEDJAX_COMPRESS_CACHE"
DEFAULT_CACHE = Path("~/.cache/fedjax_compress")
_CHUNK = 1 << 20


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
  """The argument, else $FEDJAX_COMPRESS_CACHE, else ~/.cache/fedjax_compress."""
  chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE
  return Path(chosen).expanduser()


def sha256_file(path: Path) -> str:
  """The sha256 hex digest of a file, read in chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def sidecar(path: Path) -> Path:
  """The path of the `.sha256` record kept next to a cached file."""
  return path.with_name(path.name + ".sha256")


def _write_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def verify_cached(path: Path) -> str:
  """Checks `path` against its sidecar and returns its sha256.

  A file without a sidecar (placed by hand) is trusted once: its hash is
  recorded, when the folder is writable, for later checks.
  """
  try:
    digest = sha256_file(path)
  except OSError as e:
    raise DataError(f"{path}: cannot read the cached file ({e}).") from e
  record = sidecar(path)
  if not record.exists():
    with contextlib.suppress(OSError):  # A read-only data folder is fine.
      _write_atomic(record, f"{digest}  {path.name}\n")
    return digest
  expected = (record.read_text().split() or [""])[0]
  if digest != expected:
    raise DataError(
      f"{path}: the cached file is corrupt: sha256 {digest} differs from "
      f"{expected} recorded in {record} when it was downloaded. "
      f"Delete {path} and {record}, then load again to re-download."
    )
  return digest


def download(
  url: str, dest: Path, *, expected_sha256: str | None = None, timeout: float = 60.0
) -> Path:
  """Downloads `url` to `dest` via a temporary file and an atomic rename.

  Shows a tqdm progress bar, records `dest.sha256`, and checks
  `expected_sha256` when given. Raises DataError naming the URL and `dest`.
  """
  tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
  try:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = _fetch(url, tmp, timeout, label=dest.name)
    if expected_sha256 and digest != expected_sha256:
      raise DataError(
        f"downloaded {url} but its sha256 {digest} differs from the published "
        f"{expected_sha256}; the upstream file may have changed. If you trust "
        f"it, place it by hand at {dest}."
      )
    _write_atomic(sidecar(dest), f"{digest}  {dest.name}\n")
    os.replace(tmp, dest)
  except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
    raise DataError(
      f"could not download {url} to {dest} ({e}). If this machine is offline, "
      f"download that URL elsewhere and place the file at {dest}, or pass data_dir= "
      "pointing at a folder that holds it."
    ) from e
  finally:
    tmp.unlink(missing_ok=True)
  return dest


def _fetch(url: str, tmp: Path, timeout: float, label: str) -> str:
  """Streams `url` into `tmp`; returns its sha256."""
  h = hashlib.sha256()
  with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
    total = int(response.headers.get("Content-Length") or 0) or None
    with tqdm(
      total=total, unit="B", unit_scale=True, desc=f"download {label}", mininterval=0.5, leave=False
    ) as bar:
      while chunk := response.read(_CHUNK):
        out.write(chunk)
        h.update(chunk)
        bar.update(len(chunk))
  received = tmp.stat().st_size
  if total is not None and received != total:
    raise OSError(f"connection closed after {received} of {total} bytes")
  return h.hexdigest()


def decompressed(src: Path, dest: Path) -> Path:
  """Decompresses `src` (.lzma / .xz) to `dest` once; reuses a matching `dest`."""
  source_sha = verify_cached(src)
  marker = dest.with_name(dest.name + ".source")
  if dest.exists() and marker.exists():
    recorded = marker.read_text().split()
    if recorded[:2] == [source_sha, str(dest.stat().st_size)]:
      return dest
  _decompress(src, dest)
  _write_atomic(marker, f"{source_sha} {dest.stat().st_size}\n")
  return dest


def _decompress(src: Path, dest: Path) -> None:
  tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
  try:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
      open(src, "rb") as raw,
      lzma.LZMAFile(raw) as z,
      open(tmp, "wb") as out,
      tqdm(
        total=src.stat().st_size,
        unit="B",
        unit_scale=True,
        mininterval=0.5,
        desc=f"decompress {src.name}",
        leave=False,
      ) as bar,
    ):
      while chunk := z.read(_CHUNK):
        out.write(chunk)
        bar.update(raw.tell() - bar.n)
    os.replace(tmp, dest)
  except (lzma.LZMAError, EOFError) as e:
    raise DataError(
      f"{src}: the lzma file is truncated or corrupt ({e}). Delete it (and "
      f"{sidecar(src).name}) and fetch it again."
    ) from e
  except OSError as e:
    raise DataError(f"cannot decompress {src} to {dest} ({e}).") from e
  finally:
    tmp.unlink(missing_ok=True)


def fetch_sqlite(
  what: str,
  url: str,
  cache: Path,
  sqlite_name: str,
  *,
  download_allowed: bool,
  wanted: str,
  reference_sha256: str | None = None,
) -> Path:
  """TFF's `url` (an .lzma of a SQLite file) downloaded into `cache` and decompressed.

  `what` names the dataset and `wanted` the files a data_dir could hold instead, for the
  one-line error when `download_allowed` is False. A digest other than
  `reference_sha256` is logged, not refused: the file's structure is checked when read.
  """
  target = cache / url.rsplit("/", 1)[-1]
  if not download_allowed:
    raise DataError(
      f"{what} is not in the cache {cache} and download=False: download {url} "
      f"and place it at {target}, or pass data_dir= pointing at a folder with "
      f"{wanted}."
    )
  download(url, target)
  digest = verify_cached(target)
  if reference_sha256 and digest != reference_sha256:
    logging.warning(
      "Downloaded %s has sha256 %s, not the %s recorded; the upstream file may "
      "have changed. Its structure is checked when it is read.",
      url,
      digest,
      reference_sha256,
    )
  return decompressed(target, cache / sqlite_name)
