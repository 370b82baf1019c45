"""Compression that survives secure aggregation and differential privacy.

Clients round their (scaled) updates to integers (`rounding`), add integer noise shares
(`samplers`: the discrete Gaussian, the Skellam distribution), and send the result as
elements of Z_{2^b} (`modular`), which a secure aggregation protocol can sum without the
server seeing any one update. `distributed` chains them into the DDG and Skellam
aggregators; `plan` resolves a run's noise, scale and bits and accounts it. See
docs/privacy.md.
"""

from fedjax_compress.privacy.modular import (
  ModularPartial,
  container_dtype,
  modular_add,
  modular_sum,
  modular_wrap,
  unwrap,
  wrap,
)
from fedjax_compress.privacy.rounding import (
  ConditionalRounding,
  conditional_randomized_round,
  randomized_round,
  rounding_norm_bound,
  within_norm,
)
from fedjax_compress.privacy.samplers import discrete_gaussian, discrete_gaussian_pmf, skellam
from fedjax_compress.privacy.calibration import (
  bits_for_modular_sum,
  gamma_for_bits,
  max_abs_coordinate,
)
from fedjax_compress.privacy.plan import DpPlan, make_plan
from fedjax_compress.privacy.distributed import distributed_dp

# accounting.py imports dp-accounting, which takes about a second (SciPy's signal
# module), so its names are loaded on first use rather than with the package.
_ACCOUNTING = (
  "DpParams",
  "dp_event",
  "effective_noise_multiplier",
  "epsilon",
  "epsilons_by_round",
  "local_noise",
  "noise_multiplier_for_epsilon",
)


def __getattr__(name):
  if name in _ACCOUNTING:
    from fedjax_compress.privacy import accounting  # pylint: disable=import-outside-toplevel

    return getattr(accounting, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
