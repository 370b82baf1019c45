"""Throughput of the TFF EMNIST reader on a generated 50k-example SQLite file.

Run from the repo root: `.venv/bin/python -m tests.data.bench_tff_emnist`.
Not a test (pytest does not collect it): it takes ~15 s.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from fedjax_compress.data import example_proto, tff_emnist
from tests.data import fixtures

N, CLIENT_SIZE = 50_000, 100  # TFF's digits-only writers average ~101 examples.


def _rate(fn, n):
  start = time.perf_counter()
  fn()
  seconds = time.perf_counter() - start
  return n / seconds, seconds


def main():
  rng = np.random.default_rng(0)
  images = rng.random((1000, 784), dtype=np.float32)
  blobs = [fixtures.example_bytes(images[i % 1000], i % 10) for i in range(N)]

  def hand():
    for b in blobs:
      example_proto.parse_example(b)

  def upb():  # The protobuf runtime, plus what it takes to get numpy out.
    ex = fixtures.example_class()()
    for b in blobs:
      ex.ParseFromString(b)
      np.asarray(ex.features.feature["pixels"].float_list.value, np.float32)

  for name, fn in (("hand-written decoder", hand), ("protobuf (upb) + numpy", upb)):
    rate, s = _rate(fn, N)
    print(f"{name:>24}: {rate:9,.0f} examples/s ({s:.2f} s)")

  with tempfile.TemporaryDirectory() as d:
    sizes = {f"f{i:04d}_00": CLIENT_SIZE for i in range(N // CLIENT_SIZE)}
    clients = fixtures.make_clients(sizes, 10)
    path = fixtures.write_tff_sqlite(Path(d) / tff_emnist.SQLITE_NAME,
                                     {"digits_only_train": clients})
    rate, s = _rate(lambda: tff_emnist.read_sqlite(path, "digits_only_train", 10), N)
    print(f"{'read_sqlite end to end':>24}: {rate:9,.0f} examples/s ({s:.2f} s, "
          f"{path.stat().st_size / 2**20:.0f} MiB file)")


if __name__ == "__main__":
  main()
