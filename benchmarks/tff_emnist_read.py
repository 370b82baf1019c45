"""Read speed of TFF's federated EMNIST: the tf.train.Example decoder and `read_sqlite`.

  python -m benchmarks.tff_emnist_read [--examples=50000] [--json=PATH]

Why `data.example_proto` decodes the examples by hand: its rate against the protobuf
(upb) runtime's plus the conversion to numpy, over the same serialized examples; then a
whole-split `tff_emnist.read_sqlite` end to end (one streaming query, parsing, checks)
over a generated SQLite file of --examples examples in TFF's layout (clients of 100,
about the average of TFF's digits-only writers), written to a temporary folder.
Prints the rates; `--json` writes them. Results: benchmarks/RESULTS.md, "TFF EMNIST reader".
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from benchmarks import cli
from fedjax_compress.data import example_proto, tff_emnist
from tests.data import fixtures

FLAGS = flags.FLAGS
flags.DEFINE_integer("examples", 50_000, "Examples decoded and read.", lower_bound=100)
flags.DEFINE_string("json", None, "Write the rates here.")

CLIENT_SIZE = 100  # TFF's digits-only writers average ~101 examples.


def timed(fn, n: int) -> dict:
  start = time.perf_counter()
  fn()
  seconds = time.perf_counter() - start
  return {"examples_per_s": n / seconds, "seconds": seconds}


def main(argv):
  del argv
  cli.check_json_path(FLAGS.json)
  n = FLAGS.examples
  rng = np.random.default_rng(0)
  images = rng.random((1000, 784), dtype=np.float32)
  blobs = [fixtures.example_bytes(images[i % 1000], i % 10) for i in range(n)]

  def hand():
    for b in blobs:
      example_proto.parse_example(b)

  def upb():  # The protobuf runtime, plus what it takes to get numpy out.
    ex = fixtures.example_class()()
    for b in blobs:
      ex.ParseFromString(b)
      np.asarray(ex.features.feature["pixels"].float_list.value, np.float32)

  records = []
  for name, fn in (("hand-written decoder", hand), ("protobuf (upb) + numpy", upb)):
    records.append({"variant": name, **timed(fn, n)})

  with tempfile.TemporaryDirectory() as d:
    sizes = {f"f{i:04d}_00": CLIENT_SIZE for i in range(n // CLIENT_SIZE)}
    path = fixtures.write_tff_sqlite(
      Path(d) / tff_emnist.SQLITE_NAME, {"digits_only_train": fixtures.make_clients(sizes, 10)}
    )
    rows = len(sizes) * CLIENT_SIZE
    records.append(
      {
        "variant": "read_sqlite end to end",
        "file_mib": path.stat().st_size / 2**20,
        **timed(lambda: tff_emnist.read_sqlite(path, "digits_only_train", 10), rows),
      }
    )

  for r in records:
    r.update(examples=n, cpu_count=os.cpu_count(), loadavg_1m=os.getloadavg()[0])
    print(f"{r['variant']:>24}: {r['examples_per_s']:9,.0f} examples/s ({r['seconds']:.2f} s)")
  cli.write_json(FLAGS.json, records)


if __name__ == "__main__":
  app.run(main)
