"""Federated learning processes: client work, execution strategies, FedAvg, evaluation."""

from fedjax_compress.learning.client import (ClientOutput, ClientTrainer, GlobalModel, gradient,
                                             local_sgd)
from fedjax_compress.learning.evaluation import evaluator
from fedjax_compress.learning.execution import STRATEGIES
from fedjax_compress.learning import fed_avg as fed_avg_lib
from fedjax_compress.learning.fed_avg import Process, ServerState, check_bit_measurements, fed_avg
