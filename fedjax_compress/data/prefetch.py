"""Host-side prefetch: the next round's batches are built while this round trains."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def prefetched(make: Callable[[int], T], rounds: Iterable[int]) -> Iterator[T]:
  """Yields `make(r)` for each `r` in `rounds`, in order, one ahead on a background thread.

  `make` must be a pure function of `r` (round batches are: sampling and shuffling derive
  from (seed, round)), so prefetching changes nothing but the wait. Building a batch is
  numpy copying, which runs beside the jitted round (XLA releases the GIL). An exception
  in `make` surfaces at the round it belongs to.
  """
  rounds = list(rounds)
  with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
    upcoming = pool.submit(make, rounds[0]) if rounds else None
    for i in range(len(rounds)):
      current = upcoming
      assert current is not None  # submitted for rounds[i] on the step before
      upcoming = pool.submit(make, rounds[i + 1]) if i + 1 < len(rounds) else None
      yield current.result()
