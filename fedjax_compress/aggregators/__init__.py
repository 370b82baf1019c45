"""Aggregators and encoding stages with exact bit accounting.

What a custom aggregator needs is exported here: the `Aggregator` interface, `Clients`,
the bit counters (`BIT_KEYS`, `bit_measurements`, `with_bits`, `zero_bits`), the
per-client helpers (`set_clients`, `sum_over_clients`) and payload sizing
(`payload_bits`, `value_bits`, `measured_bits`); see docs/writing_an_aggregator.md.
"""

from fedjax_compress.aggregators.core import (ACCOUNTINGS, Aggregator, BIT_KEYS, Clients,
                                              DOWNLINK_AUX_BITS, Measurements,
                                              UPLINK_AUX_BITS, UPLINK_BITS, bit_measurements,
                                              check_accounting,
                                              payload_bits, per_client_bits, set_clients,
                                              sum_over_clients, value_bits, with_bits, wrap,
                                              zero_bits)
from fedjax_compress.aggregators.encoded import (above_threshold, encoded_mean, encoded_sum, mean,
                                                 sum)
from fedjax_compress.aggregators.presets import (compression_aggregator, dp_aggregator,
                                                 robust_aggregator)
from fedjax_compress.aggregators.quantize import bitpack, quantize_codes, uniform_quantize
from fedjax_compress.aggregators.registry import (aggregator_names, aggregator_registry,
                                                  broadcast_names, broadcast_registry,
                                                  create_aggregator, create_broadcast,
                                                  parse_stages, register_aggregator,
                                                  register_broadcast, register_stage,
                                                  stage_names, stage_registry)
from fedjax_compress.aggregators.adaptive import adaptive_quantize
from fedjax_compress.aggregators.broadcast import Broadcast, encoded_broadcast, float32_broadcast
from fedjax_compress.aggregators.error_feedback import error_feedback
from fedjax_compress.aggregators.robust import QuantileEstimator, clipping, global_norm, zeroing
from fedjax_compress.aggregators.rotation import hadamard
from fedjax_compress.aggregators.dither import dithered, dithered_codes
from fedjax_compress.aggregators.eden_quantize import eden
from fedjax_compress.aggregators.core import Stream, measured_bits
from fedjax_compress.aggregators.entropy import entropy_code
from fedjax_compress.aggregators.lloyd import gaussian_levels, lloyd_max
from fedjax_compress.aggregators.norm_quantize import qsgd
from fedjax_compress.aggregators.one_bit import drive, scaled_sign
from fedjax_compress.aggregators.sparsify import rand_k, top_k
from fedjax_compress.aggregators.ternary import terngrad
from fedjax_compress.aggregators.stages import (ANY, CODES, FLOAT, SAME, STREAM, WORDS, Encoded,
                                                SharedKeys, Stage, chain, codes_kind, flatten,
                                                identity, named, stateless)
# Last: the package attribute `check_stage` is the function (its module runs as
# `python -m fedjax_compress.aggregators.check_stage`).
from fedjax_compress.aggregators.check_stage import StageReport, check_stage, format_report
