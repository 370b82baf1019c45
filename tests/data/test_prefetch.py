"""data/prefetch.py: the next round's batch is built while the current one trains."""

import pytest


def test_prefetched_yields_every_round_in_order_one_ahead():
  import threading
  from fedjax_compress.data.prefetch import prefetched

  built = {r: threading.Event() for r in range(4)}

  def make(r):
    built[r].set()
    return r * r

  batches = prefetched(make, range(4))
  assert next(batches) == 0
  # Round 1 is built while the caller still works on round 0.
  assert built[1].wait(timeout=10)
  assert list(batches) == [1, 4, 9]
  assert list(prefetched(make, [])) == []


def test_prefetched_raises_at_the_round_that_failed():
  from fedjax_compress.data.prefetch import prefetched

  def make(r):
    if r == 2:
      raise ValueError("round 2 is broken")
    return r

  batches = prefetched(make, range(4))
  assert [next(batches), next(batches)] == [0, 1]
  with pytest.raises(ValueError, match="round 2"):
    next(batches)
