"""Peak memory of Stack Overflow's lazy clients: opening ~342,000 clients, a few rounds.

  python -m benchmarks.lazy_clients [--clients=342477] [--sentences=2] [--rounds=5]
      [--clients_per_round=50] [--batch_size=16] [--modes=lazy,eager] [--json=PATH]

A process (`--child=write`) writes a fixture in TFF's `stackoverflow.sqlite` layout
(tables, indexes and the six features of each example, as TFF's file has them;
hand-encoded tf.train.Examples) with --clients training clients of --sentences sentences
each, over a vocabulary of 10,000 words with a word-count file, into a temporary folder.
Then, for each mode, a fresh process (so that its peak RSS is its own) loads the training
split with `load_stackoverflow` (10,000 words, sequences of 20) and builds --rounds round
batches of --clients_per_round clients (`pipeline.sample_clients`, `pipeline.round_batch`,
as `experiments.train` does), reading its peak RSS (`resource.getrusage`, ru_maxrss)
after the imports, after opening the split and after the rounds:

- lazy: the loader's `LazyClients` mapping, which reads a client from SQLite when asked;
- eager: every client read and tokenized into a dict first (what an in-memory loader
  holds), then the same rounds.

ru_maxrss survives exec on Linux (a child starts from the peak of the process it was forked
from), so this parent stays small (no numpy, no JAX) and every step runs in its own child;
the parent's own peak when it starts them is recorded (`parent_peak_mib`). Prints a table;
--json writes the runs.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer(
  "clients", 342_477, "Training clients in the fixture (TFF's: 342,477).", lower_bound=1
)
flags.DEFINE_integer("sentences", 2, "Sentences per client.", lower_bound=1)
flags.DEFINE_integer("rounds", 5, "Round batches built after opening.", lower_bound=1)
flags.DEFINE_integer("clients_per_round", 50, "Clients a round (Reddi et al.: 50).", lower_bound=1)
flags.DEFINE_integer("batch_size", 16, "Batch size (Reddi et al.: 16).", lower_bound=1)
flags.DEFINE_list("modes", ["lazy", "eager"], "Modes to measure: lazy, eager.")
flags.DEFINE_string("json", None, "Write the runs here.")
flags.DEFINE_string(
  "child", None, "Internal: 'write' the fixture, or run one mode on it, in the folder --fixture."
)
flags.DEFINE_string("fixture", None, "Internal: the fixture folder of --child.")

VOCAB = 10_000
MODES = ("lazy", "eager")


# --- the fixture: TFF's layout, hand-encoded protos ---------------------------------------


def _varint(v: int) -> bytes:
  out = bytearray()
  while v >= 0x80:
    out.append((v & 0x7F) | 0x80)
    v >>= 7
  out.append(v)
  return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(name: str, kind: int, payload: bytes) -> bytes:
  """One Features.feature map entry: name -> Feature{kind: list{value(s)}}."""
  return _field(1, _field(1, name.encode()) + _field(2, _field(kind, payload)))


def example(tokens: str, score: int) -> bytes:
  """A tf.train.Example with TFF's six Stack Overflow features."""
  text = lambda name, value: _entry(name, 1, _field(1, value.encode()))
  features = (
    text("creation_date", "2010-01-08 09:34:05 UTC")
    + _entry("score", 3, _field(1, _varint(score)))
    + text("tags", "python|numpy")
    + text("title", "a title")
    + text("tokens", tokens)
    + text("type", "answer")
  )
  return _field(1, features)


def write_fixture(folder: Path, num_clients: int, sentences: int, seed: int = 0) -> dict:
  """stackoverflow.sqlite (split 'train') and stackoverflow.word_count in `folder`."""
  import numpy as np

  rng = np.random.default_rng(seed)
  words = [f"w{i}" for i in range(VOCAB + 2_000)]  # some of them out of the vocabulary
  (folder / "stackoverflow.word_count").write_text(
    "".join(f"{w} {len(words) - i}\n" for i, w in enumerate(words))
  )
  path = folder / "stackoverflow.sqlite"
  con = sqlite3.connect(path)
  with con:
    con.execute(
      "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
      "serialized_example_proto BLOB NOT NULL)"
    )
    con.execute("CREATE INDEX idx_examples_client_id ON examples (client_id)")
    con.execute("CREATE INDEX idx_examples_client_id_split ON examples (split_name, client_id)")
    con.execute(
      "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT "
      "NULL, num_examples INTEGER NOT NULL)"
    )
    con.execute("CREATE INDEX idx_metadata_client_id ON client_metadata (client_id)")
    lengths = rng.integers(3, 30, num_clients * sentences)
    picks = np.minimum(rng.zipf(1.3, lengths.sum()), len(words)) - 1
    starts = np.concatenate([[0], np.cumsum(lengths)])
    rows = (
      (
        "train",
        f"{c:08d}",
        example(" ".join(words[j] for j in picks[starts[k] : starts[k + 1]]), k % 7),
      )
      for c in range(num_clients)
      for k in range(c * sentences, (c + 1) * sentences)
    )
    con.executemany("INSERT INTO examples VALUES (?, ?, ?)", rows)
    con.executemany(
      "INSERT INTO client_metadata VALUES (?, 'train', ?)",
      ((f"{c:08d}", sentences) for c in range(num_clients)),
    )
  con.close()
  return {
    "clients": num_clients,
    "sentences_per_client": sentences,
    "sqlite_bytes": path.stat().st_size,
  }


# --- one mode, in its own process -----------------------------------------------------------


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_mode(mode: str, fixture: Path) -> dict:
  """Opens the fixture's training split and builds FLAGS.rounds round batches."""
  from fedjax_compress.data import pipeline
  from fedjax_compress.data.federated import FederatedData
  from fedjax_compress.data.stackoverflow import LazyClients, load_stackoverflow

  record = {"mode": mode, "peak_mib_imports": _peak_mib()}
  start = time.perf_counter()
  data = load_stackoverflow("train", data_dir=fixture, vocab_size=VOCAB, seq_len=20)
  lazy = cast(LazyClients, data.clients)  # the training split's
  if mode == "eager":
    data = FederatedData(
      {cid: lazy[cid] for cid in lazy}, data.num_classes, data.source, data.tokens
    )
  record["open_seconds"] = time.perf_counter() - start
  record["peak_mib_open"] = _peak_mib()
  record["clients"] = len(data.clients)
  reads_before, seconds = lazy.reads, []
  for r in range(1, FLAGS.rounds + 1):
    start = time.perf_counter()
    ids = pipeline.sample_clients(data.client_ids, FLAGS.clients_per_round, seed=0, round_num=r)
    batch = pipeline.round_batch(data, ids, batch_size=FLAGS.batch_size, seed=0, round_num=r)
    seconds.append(time.perf_counter() - start)
  record.update(
    round_seconds=seconds,
    peak_mib_rounds=_peak_mib(),
    sqlite_reads_in_rounds=lazy.reads - reads_before,
    batch_shape=list(batch.x.shape),
  )
  return record


# --- the parent: fixture, one process per mode, the table ---------------------------------


def _child(mode: str, fixture: Path) -> dict:
  parent = _peak_mib()
  cmd = [
    sys.executable,
    "-m",
    "benchmarks.lazy_clients",
    f"--child={mode}",
    f"--fixture={fixture}",
    f"--rounds={FLAGS.rounds}",
    f"--clients={FLAGS.clients}",
    f"--sentences={FLAGS.sentences}",
    f"--clients_per_round={FLAGS.clients_per_round}",
    f"--batch_size={FLAGS.batch_size}",
  ]
  done = subprocess.run(
    cmd,
    capture_output=True,
    text=True,
    cwd=Path(__file__).resolve().parent.parent,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  if done.returncode:
    raise SystemExit(f"error: the {mode} step failed: {done.stderr.strip().splitlines()[-1:]}")
  return {**json.loads(done.stdout.strip().splitlines()[-1]), "parent_peak_mib": parent}


def main(argv):
  del argv
  if FLAGS.child == "write":
    start = time.perf_counter()
    fixture = write_fixture(Path(FLAGS.fixture), FLAGS.clients, FLAGS.sentences)
    print(json.dumps({**fixture, "write_seconds": time.perf_counter() - start}))
    return
  if FLAGS.child:
    print(json.dumps(run_mode(FLAGS.child, Path(FLAGS.fixture))))
    return
  # No `benchmarks.cli` (it imports JAX) before the children: the parent stays small.
  if FLAGS.json and not Path(FLAGS.json).resolve().parent.is_dir():
    raise SystemExit(f"error: --json={FLAGS.json}: its folder does not exist; create it first.")
  if unknown := sorted(set(FLAGS.modes) - set(MODES)):
    raise SystemExit(f"error: --modes: {unknown} unknown; valid: {list(MODES)}.")
  with tempfile.TemporaryDirectory(prefix="lazy_clients_") as folder:
    fixture = _child("write", Path(folder))
    print(
      f"fixture: {fixture['clients']:,} clients x {fixture['sentences_per_client']} "
      f"sentences, {fixture['sqlite_bytes'] / 2**20:.1f} MiB SQLite "
      f"({fixture['write_seconds']:.1f} s to write)"
    )
    runs = [_child(mode, Path(folder)) for mode in FLAGS.modes]
  from benchmarks import cli

  print(
    f"\n{'mode':<6} {'clients':>8} {'open s':>7} {'peak MiB: imports':>18} {'open':>8} "
    f"{f'{FLAGS.rounds} rounds':>9} {'s/round':>8} {'reads':>6}"
  )
  for r in runs:
    per_round = sum(r["round_seconds"]) / len(r["round_seconds"])
    print(
      f"{r['mode']:<6} {r['clients']:>8,} {r['open_seconds']:>7.2f} "
      f"{r['peak_mib_imports']:>18.1f} {r['peak_mib_open']:>8.1f} "
      f"{r['peak_mib_rounds']:>9.1f} {per_round:>8.3f} {r['sqlite_reads_in_rounds']:>6}"
    )
  cli.write_json(
    FLAGS.json,
    {
      "fixture": fixture,
      "rounds": FLAGS.rounds,
      "clients_per_round": FLAGS.clients_per_round,
      "batch_size": FLAGS.batch_size,
      "runs": runs,
      "loadavg_1m": os.getloadavg()[0],
    },
  )


if __name__ == "__main__":
  app.run(main)
