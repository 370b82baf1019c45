"""The seed's second experiment: FedAvg with TFF's compression aggregator.

zeroing(clipping(weighted mean(8-bit stochastic quantization of tensors with more than
20,000 elements))). `--config.bit_accounting=tff` reproduces the tutorial's bit counts.
"""

from configs import default, emnist_fedavg


def get_config():
  config = emnist_fedavg.get_config()
  config.aggregator = default.component("compression", bits=8, threshold=20_000)
  return config
