"""The `sharded` strategy: clients sharded over a device mesh, one program per round.

The cohort is laid out along the `clients` axis of a 1-D `jax.sharding.Mesh` over all
devices (`jax.devices()`: every process's, when multi-process). One jitted program runs
the round: a `shard_map` trains each device's clients under `vmap`, the aggregator and the
server step follow in the same program, and XLA inserts the collectives (all-reduce of
the sums, gathers where the aggregator needs all clients).

Padding. The cohort is padded to a multiple of the device count with clients whose every
batch is masked (they train on nothing: delta 0, weight 0). The padded clients are cut
off before the aggregator, which therefore sees exactly the real clients: the robust
wrappers' quantile estimates, the per-client bit counters and the per-client encoding
keys are those of the other strategies. (A zero-weight client leaves `mean` unchanged,
but not a quantile estimate, which counts clients.) When the cohort divides evenly, no
slicing happens and the aggregator's client axis stays sharded.

Multi-process. Every process builds the same `RoundBatch` (sampling is a pure function of
seed and round) and places only the shards of its own devices
(`jax.make_array_from_callback`); the state is replicated on every device, so its values
can be read in every process.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fedjax_compress.learning.client import ClientTrainer
from fedjax_compress.learning.execution import vmap_clients

CLIENTS = "clients"


def client_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis `clients` over `devices` (default: all devices, all processes)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (CLIENTS,))


def global_array(host, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array that every process holds whole.

  Each process transfers only the shards of its addressable devices.
  """
  host = np.asarray(host)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree, mesh: Mesh):
  """Places every leaf, whole, on every device of `mesh` (a no-op for leaves already so)."""
  replicated = NamedSharding(mesh, P())

  def put(x):
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(replicated, x.ndim):
      return x
    return global_array(x, replicated)

  return jax.tree.map(put, tree)


def pad_clients(array: np.ndarray, multiple: int) -> np.ndarray:
  """Pads the leading (client) axis with zeros (masked-out clients) to a multiple."""
  n = array.shape[0]
  padded = -(-n // multiple) * multiple
  if padded == n:
    return array
  return np.concatenate([array, np.zeros((padded - n,) + array.shape[1:], array.dtype)])


def sharded_round(trainer: ClientTrainer, whole_round: Callable, mesh: Mesh) -> Callable:
  """`run(state, batch, rows, key) -> (state, metrics)`, the round one jitted program.

  Args:
    trainer: the clients' work; each device runs its clients under `vmap`.
    whole_round: `(state, rows, key, num_clients, train) -> (state, metrics)` (traceable),
      calling `train(received_params, client_keys) -> ClientOutput` once.
    mesh: a mesh with a `clients` axis.
  """
  clients = NamedSharding(mesh, P(CLIENTS))
  replicated = NamedSharding(mesh, P())

  def local_clients(params, x, y, mask, key_data):
    return vmap_clients(trainer, params, x, y, mask, jax.random.wrap_key_data(key_data))

  train_local = jax.shard_map(
    local_clients,
    mesh=mesh,
    in_specs=(P(), P(CLIENTS), P(CLIENTS), P(CLIENTS), P(CLIENTS)),
    out_specs=P(CLIENTS),
    # The scan's carry starts from the replicated params and varies
    # by client; nothing here relies on replication checks.
    check_vma=False,
  )

  def program(state, rows, x, y, mask, key_data, num_clients):
    padding = x.shape[0] - num_clients

    def train(received, client_keys):
      key_data = jax.random.key_data(client_keys)
      key_data = jnp.concatenate(
        [key_data, jnp.zeros((padding,) + key_data.shape[1:], key_data.dtype)]
      )
      outputs = train_local(received, x, y, mask, key_data)
      return jax.tree.map(lambda a: a[:num_clients], outputs) if padding else outputs

    return whole_round(state, rows, jax.random.wrap_key_data(key_data), num_clients, train)

  program = jax.jit(program, static_argnums=6, out_shardings=replicated)

  def run(state, batch, rows, key):
    x, y, mask = (
      global_array(pad_clients(a, mesh.size), clients) for a in (batch.x, batch.y, batch.mask)
    )
    key_data = global_array(jax.random.key_data(key), replicated)
    return program(
      replicate(state, mesh),
      global_array(rows, replicated),
      x,
      y,
      mask,
      key_data,
      batch.num_clients,
    )

  return run
