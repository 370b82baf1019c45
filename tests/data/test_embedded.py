"""scikit-learn digits as an offline federated dataset."""

import numpy as np
import pytest

from fedjax_compress.data import DataError, embedded, load_embedded_digits


def _fingerprint(data):
  return {cid: (x.tobytes(), y.tobytes()) for cid, (x, y) in data.clients.items()}


def test_deterministic_for_a_seed_and_different_across_seeds():
  a = load_embedded_digits("train", seed=3)
  assert _fingerprint(a) == _fingerprint(load_embedded_digits("train", seed=3))
  assert _fingerprint(a) != _fingerprint(load_embedded_digits("train", seed=4))


@pytest.mark.parametrize("split,total,clients", [("train", 1438, 50), ("test", 359, 10)])
def test_shapes_ranges_labels_and_sizes(split, total, clients):
  data = load_embedded_digits(split).validate()
  assert data.num_classes == 10 and len(data.clients) == clients
  assert data.total_examples == total
  assert data.client_ids[0] == f"{split}_000"
  for x, y in data.clients.values():
    assert x.dtype == np.float32 and x.shape == (len(y), 28, 28, 1)
    assert y.dtype == np.int32 and set(y.tolist()) <= set(range(10))
    assert 0.0 <= x.min() and x.max() == 1.0
    assert len(y) >= 15
  all_y = np.concatenate([y for _, y in data.clients.values()])
  assert set(all_y.tolist()) == set(range(10))


def test_convention_background_is_white_digit_in_centre_box():
  x, _ = load_embedded_digits("test").clients["test_000"]
  assert (x[:, :4] == 1.0).all() and (x[:, -4:] == 1.0).all()  # 4-pixel white margin.
  assert (x[:, :, :4] == 1.0).all() and (x[:, :, -4:] == 1.0).all()
  assert x[:, 4:24, 4:24].min() < 0.1  # Dark ink inside the 20x20 box.


def test_non_iid():
  data = load_embedded_digits("train", alpha=0.1)
  dominant = [np.bincount(y, minlength=10).max() / len(y) for _, y in data.clients.values()]
  assert np.median(dominant) > 0.5  # IID would give ~0.1-0.2.


def test_train_test_disjoint_and_cover_everything():
  x, y = embedded._images_and_labels()
  train, test = embedded._train_test_indices(y)
  assert len(np.intersect1d(train, test)) == 0
  assert len(train) + len(test) == len(y) == 1797
  np.testing.assert_allclose(np.bincount(y[test]) / np.bincount(y), 0.2, atol=0.02)
  # The loaded splits are exactly those examples, each once.
  for split, idx in (("train", train), ("test", test)):
    got = np.concatenate([xs for xs, _ in load_embedded_digits(split).clients.values()])
    assert sorted(map(bytes, got.reshape(len(got), -1))) == sorted(
      map(bytes, x[idx].reshape(len(idx), -1))
    )


def test_partition_has_no_empty_clients_even_when_skewed():
  labels = np.repeat(np.arange(10), 30)
  rng = np.random.default_rng(0)
  parts = embedded.dirichlet_partition(labels, 20, 0.01, rng, min_size=15)
  assert min(map(len, parts)) >= 15
  assert sorted(np.concatenate(parts).tolist()) == list(range(300))


def test_upsample_keeps_constants_and_shape():
  out = embedded.upsample(np.full((2, 8, 8), 0.75))
  assert out.shape == (2, 28, 28)
  np.testing.assert_allclose(out[:, 4:24, 4:24], 0.75)
  assert (out[:, :4] == 0).all()


def test_bad_arguments():
  with pytest.raises(DataError, match="'train' or 'test'"):
    load_embedded_digits("validation")
  with pytest.raises(DataError, match="cannot make 5000 clients"):
    load_embedded_digits("train", num_clients=5000)
  with pytest.raises(DataError, match="alpha"):
    load_embedded_digits("train", alpha=0)
