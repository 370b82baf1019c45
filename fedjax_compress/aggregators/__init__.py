"""Aggregators: client updates into one aggregate, as pure streamable functions, with
exact bit accounting.

What a custom aggregator needs is exported here: the `Aggregator` interface, `Clients`,
the bit counters (`BIT_KEYS`, `bit_measurements`, `with_bits`, `zero_bits`), the
per-client helpers (`set_clients`, `sum_over_clients`) and payload sizing
(`payload_bits`, `value_bits`, `measured_bits`, from `compression.bits`); see
docs/writing_an_aggregator.md. The encoding stages that compressed aggregators send
updates through are in `fedjax_compress.compression`.
"""

from fedjax_compress.aggregators.base import (
  ACCOUNTINGS,
  BIT_KEYS,
  DOWNLINK_AUX_BITS,
  UPLINK_AUX_BITS,
  UPLINK_BITS,
  Aggregator,
  Clients,
  Measurements,
  bit_measurements,
  check_accounting,
  per_client_bits,
  set_clients,
  sum_over_clients,
  with_bits,
  wrap,
  zero_bits,
)
from fedjax_compress.aggregators.broadcast import Broadcast, encoded_broadcast, float32_broadcast
from fedjax_compress.aggregators.encoded import (
  above_threshold,
  encoded_mean,
  encoded_sum,
  float32_mean,
  float32_sum,
)
from fedjax_compress.aggregators.error_feedback import error_feedback
from fedjax_compress.aggregators.presets import (
  compression_aggregator,
  dp_aggregator,
  robust_aggregator,
)
from fedjax_compress.aggregators.registry import (
  aggregator_names,
  aggregator_registry,
  broadcast_names,
  broadcast_registry,
  create_aggregator,
  create_broadcast,
  parse_stages,
  register_aggregator,
  register_broadcast,
  register_stage,
  stage_names,
  stage_registry,
)
from fedjax_compress.aggregators.robust import QuantileEstimator, clipping, global_norm, zeroing
from fedjax_compress.compression.bits import measured_bits, payload_bits, value_bits

__all__ = [
  # The interface and its bit counters (base.py).
  "ACCOUNTINGS",
  "BIT_KEYS",
  "DOWNLINK_AUX_BITS",
  "UPLINK_AUX_BITS",
  "UPLINK_BITS",
  "Aggregator",
  "Clients",
  "Measurements",
  "bit_measurements",
  "check_accounting",
  "per_client_bits",
  "set_clients",
  "sum_over_clients",
  "with_bits",
  "wrap",
  "zero_bits",
  # Payload sizing (compression/bits.py).
  "measured_bits",
  "payload_bits",
  "value_bits",
  # Sums and means, plain or through stages (encoded.py).
  "above_threshold",
  "encoded_mean",
  "encoded_sum",
  "float32_mean",
  "float32_sum",
  # Wrappers and presets.
  "QuantileEstimator",
  "clipping",
  "global_norm",
  "zeroing",
  "error_feedback",
  "compression_aggregator",
  "dp_aggregator",
  "robust_aggregator",
  # The downlink.
  "Broadcast",
  "encoded_broadcast",
  "float32_broadcast",
  # Components by name, for configs (registry.py).
  "aggregator_names",
  "aggregator_registry",
  "broadcast_names",
  "broadcast_registry",
  "create_aggregator",
  "create_broadcast",
  "parse_stages",
  "register_aggregator",
  "register_broadcast",
  "register_stage",
  "stage_names",
  "stage_registry",
]
