import numpy as np
import pytest

from fedjax_compress.data import pipeline
from tests.conftest import synthetic_data


def test_round_batch_follows_tff_semantics():
  data = synthetic_data([23, 5])
  batch = pipeline.round_batch(data, ["client_00", "client_01"], batch_size=10, epochs=2, seed=0)
  assert batch.x.shape == (2, 8, 10, 28, 28, 1)  # ceil(46 / 10) = 5 batches, bucketed to 8
  np.testing.assert_array_equal(batch.batches_per_client, [5, 1])
  assert batch.mask[0].sum() == 46 and batch.mask[0, 4].sum() == 6  # last partial batch kept
  # Each epoch is a permutation of the client's examples.
  x, y = data.clients["client_00"]
  seen = batch.y[0][batch.mask[0]]
  for epoch in (seen[:23], seen[23:]):
    np.testing.assert_array_equal(np.sort(epoch), np.sort(y))


def test_shuffle_is_a_pure_function_of_seed_round_and_client():
  data = synthetic_data([30, 30])
  make = lambda **kw: pipeline.round_batch(data, ["client_00"], batch_size=7, **kw).y
  np.testing.assert_array_equal(make(seed=1, round_num=2), make(seed=1, round_num=2))
  assert not np.array_equal(make(seed=1, round_num=2), make(seed=1, round_num=3))
  assert not np.array_equal(make(seed=1, round_num=2), make(seed=2, round_num=2))


def test_client_sampling_is_without_replacement_and_seeded():
  ids = [f"c{i}" for i in range(100)]
  a = pipeline.sample_clients(ids, 10, seed=0, round_num=1)
  assert len(set(a)) == 10
  assert a == pipeline.sample_clients(ids, 10, seed=0, round_num=1)
  assert a != pipeline.sample_clients(ids, 10, seed=1, round_num=1)
  assert a != pipeline.sample_clients(ids, 10, seed=0, round_num=2)
  with pytest.raises(ValueError, match="clients_per_round=101"):
    pipeline.sample_clients(ids, 101, seed=0, round_num=1)


def test_buckets_are_powers_of_two():
  assert [pipeline.bucket(n) for n in (1, 2, 3, 5, 8, 9, 52)] == [1, 2, 4, 8, 8, 16, 64]
