"""EMNIST-62 character recognition ("EMNIST CR") as in Reddi et al., "Adaptive Federated
Optimization" (ICLR 2021).

TFF's federated EMNIST with letters (`only_digits=False`: 3,400 writers, 62 classes), the
authors' CNN with dropout (`cnn_dropout`: conv 3x3 32 - conv 3x3 64 - max-pool - dropout
0.25 - dense 128 - dropout 0.5 - dense 62; google-research/federated
`utils/models/emnist_models.py`), 10 clients a round, batch 20, 1 local epoch, 1500
rounds, client SGD, weighted by examples. The schedule and the learning rates are the
authors' (google-research/federated, `optimization/docs/hyperparameters.md`; Reddi et al.
2021, appendix). Their best learning rates, base-10 logarithms:

  method       client SGD   server                    epsilon
  FedAvg       -1           SGD 0                     -
  FedAvgM      -1.5         SGD -0.5, momentum 0.9    -
  FedAdagrad   -1.5         Adagrad -1                -2
  FedAdam      -1.5         Adam -2.5                 -4
  FedYogi      -1.5         Yogi -2.5                 -4

`get_config()` is FedAdam; `get_config("fedavg")` etc. give the others. From the command
line, FedAvg is
  --config.client_optimizer.learning_rate=0.1 --config.server_optimizer='sgd(learning_rate=1.0)'
(See configs/cifar100.py for how optax's Adam and Yogi differ from the Keras ones used.)

On TFF's data: --config.data_dir=FOLDER with `emnist_all.sqlite[.lzma]` (or downloaded
into the cache with network access). On the LEAF FEMNIST files (all 62 classes):
  --config.data.name=leaf --config.data_dir=/work/shared/data/femnist_leaf_niid05
(`leaf` takes `only_digits`, which this config sets to False.)
"""

import ml_collections

from configs import default

# Reddi et al.'s best learning rates for EMNIST CR (see the docstring): the client's SGD
# learning rate, the server optimizer and its arguments.
METHODS = {
  "fedavg": (10**-1, "sgd", {"learning_rate": 1.0}),
  "fedavgm": (10**-1.5, "sgd", {"learning_rate": 10**-0.5, "momentum": 0.9}),
  "fedadagrad": (
    10**-1.5,
    "adagrad",
    {"learning_rate": 10**-1, "initial_accumulator_value": 0.0, "eps": 10**-2},
  ),
  "fedadam": (10**-1.5, "adam", {"learning_rate": 10**-2.5, "eps": 10**-4}),
  "fedyogi": (10**-1.5, "yogi", {"learning_rate": 10**-2.5, "eps": 10**-4}),
}


def get_config(method: str = "fedadam") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = default.component("emnist", only_digits=False)
  config.model = default.component("cnn_dropout")
  config.rounds = 1500
  config.clients_per_round = 10
  config.batch_size = 20
  config.epochs = 1
  default.set_fedopt(config, METHODS, method)
  config.eval_every = 50
  config.checkpoint_every = 50
  return config
