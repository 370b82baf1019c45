"""The seed's first experiment: FedAvg on TFF's federated EMNIST digits.

10 clients a round sampled without replacement, batch 20, 1 epoch, client SGD 0.02,
server SGD 1.0, weighted by examples, the original FedAvg CNN (McMahan et al., 2017;
TFF's "FedAvg with compression on EMNIST" tutorial). On the real LEAF FEMNIST digits
instead: --config.data.name=leaf --config.data.data_dir=PATH.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data = default.component("emnist", only_digits=True)
  config.model = default.component("cnn")
  config.rounds = 200
  config.clients_per_round = 10
  config.batch_size = 20
  config.epochs = 1
  config.client_optimizer = default.component("sgd", learning_rate=0.02)
  config.server_optimizer = default.component("sgd", learning_rate=1.0)
  config.eval_every = 10
  return config
