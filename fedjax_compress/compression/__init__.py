"""Encoding stages: one encode/decode step on a tensor, composable with `chain`.

A stage maps a tensor to `Encoded(values, side)`; its bits are those of the arrays it
emits (`bits.payload_bits`, `bits.measured_bits`). The interface is in `base.py`, each
stage factory in the module named after it (`hadamard.py`, `eden.py`, `top_k.py`, ...);
`prng` draws the stages' noise, `arguments` checks their arguments and `flat` holds the
helpers of stages that work on a tensor as one float32 vector. Aggregators that
send updates through stages (`encoded_mean`, `error_feedback`, `encoded_broadcast`) are
in `fedjax_compress.aggregators`; docs/writing_a_stage.md shows how to write a stage.
"""

from fedjax_compress.compression.adaptive_quantize import adaptive_quantize
from fedjax_compress.compression.base import (
  ANY,
  CODES,
  FLOAT,
  SAME,
  STREAM,
  WORDS,
  Encoded,
  SharedKeys,
  Spec,
  Stage,
  codes_kind,
  display_name,
  flatten,
  identity,
  named,
  stateless,
)
from fedjax_compress.compression.bitpack import bitpack
from fedjax_compress.compression.bits import Stream, measured_bits, payload_bits, value_bits
from fedjax_compress.compression.chain import chain
from fedjax_compress.compression.dithered import dithered, dithered_codes
from fedjax_compress.compression.drive import drive
from fedjax_compress.compression.eden import eden
from fedjax_compress.compression.entropy_code import entropy_code
from fedjax_compress.compression.hadamard import hadamard
from fedjax_compress.compression.lloyd_max import gaussian_levels, lloyd_max
from fedjax_compress.compression.qsgd import qsgd
from fedjax_compress.compression.rand_k import rand_k
from fedjax_compress.compression.scaled_sign import scaled_sign
from fedjax_compress.compression.terngrad import terngrad
from fedjax_compress.compression.top_k import top_k
from fedjax_compress.compression.uniform_quantize import quantize_codes, uniform_quantize

# Last: the package attribute `check_stage` is the function (its module runs as
# `python -m fedjax_compress.compression.check_stage`).
from fedjax_compress.compression.check_stage import StageReport, check_stage, format_report

__all__ = [
  # The stage interface (base.py) and composition (chain.py).
  "ANY",
  "CODES",
  "FLOAT",
  "SAME",
  "STREAM",
  "WORDS",
  "Encoded",
  "SharedKeys",
  "Spec",
  "Stage",
  "chain",
  "codes_kind",
  "display_name",
  "flatten",
  "identity",
  "named",
  "stateless",
  # Payload sizing (bits.py).
  "Stream",
  "measured_bits",
  "payload_bits",
  "value_bits",
  # Stages, each in the module named after it.
  "adaptive_quantize",
  "bitpack",
  "dithered",
  "dithered_codes",
  "drive",
  "eden",
  "entropy_code",
  "gaussian_levels",
  "hadamard",
  "lloyd_max",
  "qsgd",
  "quantize_codes",
  "rand_k",
  "scaled_sign",
  "terngrad",
  "top_k",
  "uniform_quantize",
  # Measuring a stage (check_stage/).
  "StageReport",
  "check_stage",
  "format_report",
]
