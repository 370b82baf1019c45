"""From client examples to the padded arrays of one round.

TFF's client pipeline is `shuffle -> repeat(epochs) -> batch(b)` with the last partial
batch kept. Here the same batches are laid out as fixed-shape numpy arrays with a mask,
so that every round of a run compiles to one of a few shapes.

Examples may be images (x float32, y int32 [n]) or token sequences (`data.tokens` set:
x and y int32 [n, T]). The mask marks whole examples; padding rows are all zeros, so a
padded sequence's targets are pad ids too, and the sequence loss also skips pad targets.
"""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple, Sequence

import numpy as np

from fedjax_compress.data.federated import FederatedData
from fedjax_compress.streams import SAMPLING_STREAM


class RoundBatch(NamedTuple):
  """The local data of one round's clients.

  Attributes:
    x: [clients, batches, batch_size, *example_shape] float32 (images) or int32
      (token ids).
    y: [clients, batches, batch_size, *target_shape] int32: labels [] or next-token
      ids [T].
    mask: [clients, batches, batch_size] bool; False marks padding examples.
    client_ids: the ids of the clients, in order.
  """

  x: np.ndarray
  y: np.ndarray
  mask: np.ndarray
  client_ids: tuple[str, ...] = ()

  @property
  def num_clients(self) -> int:
    return self.x.shape[0]

  @property
  def batches_per_client(self) -> np.ndarray:
    """Number of non-empty batches of each client."""
    return self.mask.any(axis=-1).sum(axis=-1)


def sample_clients(
  client_ids: Sequence[str], num_clients: int, *, seed: int, round_num: int
) -> tuple[str, ...]:
  """Samples clients without replacement; a pure function of (seed, round)."""
  if not 0 < num_clients <= len(client_ids):
    raise ValueError(
      f"clients_per_round={num_clients} must be in [1, {len(client_ids)}] "
      f"(the number of clients in the dataset)."
    )
  rng = np.random.default_rng([seed, round_num, SAMPLING_STREAM])
  chosen = rng.choice(len(client_ids), size=num_clients, replace=False)
  return tuple(client_ids[i] for i in chosen)


def num_batches(num_examples: int, *, batch_size: int, epochs: int) -> int:
  """Batches of a client with `num_examples` examples: ceil(n * epochs / batch_size)."""
  return math.ceil(num_examples * epochs / batch_size)


def bucket(n: int) -> int:
  """The smallest power of two >= n: a run sees O(log max) distinct shapes."""
  return 1 << max(n - 1, 0).bit_length()


def client_order(num_examples: int, *, epochs: int, rng: np.random.Generator | None) -> np.ndarray:
  """Example indices as the client visits them: a fresh shuffle per epoch."""
  if rng is None:
    return np.tile(np.arange(num_examples), epochs)
  return np.concatenate([rng.permutation(num_examples) for _ in range(epochs)])


def round_batch(
  data: FederatedData,
  client_ids: Sequence[str],
  *,
  batch_size: int,
  epochs: int = 1,
  seed: int = 0,
  round_num: int = 0,
  shuffle: bool = True,
  pad_batches_to: int | None = None,
) -> RoundBatch:
  """Builds the padded batches of `client_ids` for one round.

  Args:
    data: the federated training data.
    client_ids: clients of the round.
    batch_size: examples per batch; each client's last batch may be partial.
    epochs: passes over each client's data.
    seed, round_num: the shuffle of client `c` is a pure function of (seed, round, c).
    shuffle: shuffle each client's examples (TFF does).
    pad_batches_to: the number of batches per client after padding; by default
      `bucket(max batches of the round's clients)`.
  """
  if batch_size <= 0 or epochs <= 0:
    raise ValueError(f"batch_size={batch_size} and epochs={epochs} must be positive.")
  counts = [data.num_examples(c) for c in client_ids]
  most = max(num_batches(n, batch_size=batch_size, epochs=epochs) for n in counts)
  width = pad_batches_to or bucket(most)
  if width < most:
    raise ValueError(f"pad_batches_to={width} is less than the {most} batches of a client.")
  first_x, first_y = next(iter(data.clients.values()))
  shape = (len(client_ids), width * batch_size)
  x = np.zeros(shape + first_x.shape[1:], _x_dtype(data))
  y = np.zeros(shape + first_y.shape[1:], np.int32)
  mask = np.zeros(shape, bool)
  for i, cid in enumerate(client_ids):
    cx, cy = data.clients[cid]
    rng = _client_rng(seed, round_num, cid) if shuffle else None
    order = client_order(len(cy), epochs=epochs, rng=rng)
    x[i, : len(order)] = cx[order]
    y[i, : len(order)] = cy[order]
    mask[i, : len(order)] = True
  split = lambda a: a.reshape((len(client_ids), width, batch_size) + a.shape[2:])
  return RoundBatch(split(x), split(y), split(mask), tuple(client_ids))


def eval_batches(data: FederatedData, *, batch_size: int = 500) -> RoundBatch:
  """All examples of `data` as one pseudo-client, in fixed-size masked batches."""
  ids = data.client_ids
  xs = np.concatenate([data.clients[c][0] for c in ids])
  ys = np.concatenate([data.clients[c][1] for c in ids])
  n = len(ys)
  width = math.ceil(n / batch_size)
  x = np.zeros((width * batch_size,) + xs.shape[1:], _x_dtype(data))
  y = np.zeros((width * batch_size,) + ys.shape[1:], np.int32)
  mask = np.zeros(width * batch_size, bool)
  x[:n], y[:n], mask[:n] = xs, ys, True
  split = lambda a: a.reshape((1, width, batch_size) + a.shape[1:])
  return RoundBatch(split(x), split(y), split(mask), ("eval",))


def _x_dtype(data: FederatedData) -> type[np.number]:
  """int32 for token ids, float32 for images (whatever dtype a loader produced)."""
  return np.int32 if data.tokens is not None else np.float32


def _client_rng(seed: int, round_num: int, client_id: str) -> np.random.Generator:
  return np.random.default_rng([seed, round_num, zlib.crc32(client_id.encode())])
