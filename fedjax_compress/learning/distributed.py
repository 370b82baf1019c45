"""Joining a multi-process (multi-host) JAX runtime before any JAX work.

Every process runs the same experiment; `fed_avg(..., strategy="sharded")` (what `auto`
picks when there is more than one process) shards the clients of each round over the
devices of all processes. Launch, one command per process (here two on one machine):

  FEDJAX_COORDINATOR_ADDRESS=127.0.0.1:12345 FEDJAX_NUM_PROCESSES=2 FEDJAX_PROCESS_ID=0 \\
      python -m experiments.main --config=... --workdir=/tmp/run_p0 &
  FEDJAX_COORDINATOR_ADDRESS=127.0.0.1:12345 FEDJAX_NUM_PROCESSES=2 FEDJAX_PROCESS_ID=1 \\
      python -m experiments.main --config=... --workdir=/tmp/run_p1

On several hosts the address is process 0's host. On CPU the processes exchange
collectives through gloo.
"""

from __future__ import annotations

import os

import jax

ENV_ADDRESS = "FEDJAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "FEDJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "FEDJAX_PROCESS_ID"


def initialize(
  coordinator_address: str, num_processes: int, process_id: int, *, cpu_collectives: str = "gloo"
) -> None:
  """`jax.distributed.initialize`, with CPU collectives; call before any JAX computation."""
  jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(
    coordinator_address, num_processes=num_processes, process_id=process_id
  )


def initialize_from_env(environ=None) -> bool:
  """Initializes from `FEDJAX_COORDINATOR_ADDRESS`, `FEDJAX_NUM_PROCESSES` and
  `FEDJAX_PROCESS_ID` when the address is set; returns whether it did.

  Idempotent: a runtime that is already initialized is left as it is.
  """
  environ = os.environ if environ is None else environ
  address = environ.get(ENV_ADDRESS)
  if not address:
    return False
  if jax.distributed.is_initialized():
    return True
  missing = [k for k in (ENV_NUM_PROCESSES, ENV_PROCESS_ID) if k not in environ]
  if missing:
    raise ValueError(f"{ENV_ADDRESS} is set but {', '.join(missing)} is not.")
  initialize(address, int(environ[ENV_NUM_PROCESSES]), int(environ[ENV_PROCESS_ID]))
  return True
