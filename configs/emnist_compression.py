"""The seed's second experiment: FedAvg with TFF's compression aggregator.

zeroing(clipping(weighted mean(8-bit stochastic quantization of tensors with more than
20,000 elements))). `--config.bit_accounting=tff` reproduces the tutorial's bit counts.
"""

from configs import emnist_fedavg


def get_config():
  config = emnist_fedavg.get_config()
  config.aggregator = "compression"
  config.quantization_bits = 8
  config.encode_threshold = 20_000
  return config
