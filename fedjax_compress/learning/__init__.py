"""Federated learning processes: client work, one round's pure functions, the execution
strategies' runners, FedAvg, evaluation."""

from fedjax_compress.learning.client import (
  ClientOutput,
  ClientTrainer,
  GlobalModel,
  gradient,
  local_sgd,
)
from fedjax_compress.learning.evaluation import evaluator
from fedjax_compress.learning.execution import STRATEGIES
from fedjax_compress.learning.process import (
  WEIGHTINGS,
  Process,
  check_bit_measurements,
  fed_avg,
  output_width,
)
from fedjax_compress.learning.rounds import (
  RoundContext,
  RoundResults,
  RoundSetup,
  RoundStart,
  ServerState,
)

__all__ = [
  "ClientOutput",
  "ClientTrainer",
  "GlobalModel",
  "Process",
  "RoundContext",
  "RoundResults",
  "RoundSetup",
  "RoundStart",
  "STRATEGIES",
  "ServerState",
  "WEIGHTINGS",
  "check_bit_measurements",
  "evaluator",
  "fed_avg",
  "gradient",
  "local_sgd",
  "output_width",
]
