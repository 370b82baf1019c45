"""The named random streams: every constant that separates one use of a key from another.

A round's key reaches many consumers (the broadcast, each client, each leaf's encoder,
the server's noise). Each takes `jax.random.fold_in(key, STREAM)` with its own constant
from this module, so no two draw the same numbers and a new consumer picks a constant
not listed here. The values are fixed: changing one changes every result drawn from it
(runs stay reproducible only while they stay put).
"""

# The root key of a run (`experiments.train`): fold_in(root, INIT_STREAM) initializes the
# model; round r takes fold_in(root, r) for r >= 1.
INIT_STREAM = 0

# A round's key (`learning.rounds.begin`): the broadcast's encoder draws from this one;
# `jax.random.split` of the round's key gives the clients' root and the server's key.
BROADCAST_STREAM = 0xB0

# The server's key inside an aggregator (`aggregators.encoded`, `privacy.distributed`):
# a client's private randomness (its dither) and the randomness shared by the round's
# clients and the server (rotations, `rand_k`'s indices). The broadcast's key
# (`aggregators.broadcast`) splits the same way, the server being the encoder there.
PRIVATE_STREAM = 0
SHARED_STREAM = 1

# Gaussian noise added to an aggregate (`aggregators.robust.gaussian_noise`, central DP).
NOISE_STREAM = 0x0D9

# A Flax NNX model's key (`models.model`, an NNX module): its parameters draw from the key itself,
# its dropout from fold_in(key, DROPOUT_STREAM).
DROPOUT_STREAM = 1

# Client sampling (`data.pipeline.sample_clients`): numpy's generator seeded with
# [seed, round, SAMPLING_STREAM].
SAMPLING_STREAM = 0x5A3
