"""Aggregators and encoding stages with exact bit accounting."""

from fedjax_compress.aggregators.core import (ACCOUNTINGS, Aggregator, BIT_KEYS, Clients,
                                              DOWNLINK_AUX_BITS,
                                              UPLINK_AUX_BITS, UPLINK_BITS, payload_bits,
                                              value_bits)
from fedjax_compress.aggregators.encoded import (above_threshold, encoded_mean, encoded_sum, mean,
                                                 sum)
from fedjax_compress.aggregators.presets import (compression_aggregator, dp_aggregator,
                                                 robust_aggregator)
from fedjax_compress.aggregators.quantize import bitpack, quantize_codes, uniform_quantize
from fedjax_compress.aggregators.registry import (AGGREGATORS, create_aggregator,
                                                  create_broadcast, parse_stages, register_stage,
                                                  stage_names)
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
from fedjax_compress.aggregators.stages import (Encoded, SharedKeys, Stage, chain, flatten, identity,
                                                stateless)
