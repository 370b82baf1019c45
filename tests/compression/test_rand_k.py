"""rand_k.py: indices drawn from the shared key."""

import math

import jax
import numpy as np
import pytest

from fedjax_compress.compression.rand_k import random_indices
from tests.compression.stage_helpers import KEY


def test_rand_k_indices_are_distinct_and_each_equally_likely():
  d, kept, trials = 50, 10, 4000
  draw = jax.jit(jax.vmap(lambda key: random_indices(key, d, kept)))
  idx = np.asarray(draw(jax.random.split(KEY, trials)))
  assert all(len(set(row)) == kept for row in idx) and idx.min() >= 0 and idx.max() < d
  # Each index in a sample with probability kept / d: counts ~ Binomial(trials, 0.2),
  # standard deviation 25; a lean toward low indices (ties broken by index) would show.
  counts = np.bincount(idx.ravel(), minlength=d)
  assert np.abs(counts - trials * kept / d).max() < 5 * math.sqrt(trials * 0.2 * 0.8)


def test_rand_k_indices_name_a_count_out_of_range():
  for kept in (0, 51):
    with pytest.raises(ValueError, match=f"kept={kept} of d=50"):
      random_indices(KEY, 50, kept)
