"""CIFAR-100 as in Reddi et al., "Adaptive Federated Optimization" (ICLR 2021).

TFF's federated CIFAR-100 (500 training clients of 100 images, 100 test clients), 24x24
crops (random crop and flip for training, drawn once at load time: see
`fedjax_compress/data/cifar100.py`), ResNet-18 with GroupNorm (`resnet18_gn`); 10 clients
a round, batch 20, 1 local epoch, 4000 rounds, client SGD, weighted by examples. The
schedule and the learning rates are the authors' (google-research/federated,
`optimization/docs/hyperparameters.md`, "Default values" and "Best hyperparameters";
Reddi et al. 2021, appendix). Their best learning rates, base-10 logarithms:

  method       client SGD   server                    epsilon
  FedAvg       -1           SGD 0.5                   -
  FedAvgM      -1.5         SGD 0, momentum 0.9       -
  FedAdagrad   -1           Adagrad -1                -2
  FedAdam      -1.5         Adam 0                    -1
  FedYogi      -1.5         Yogi 0                    -1

`get_config()` is FedAdam; `get_config("fedavg")` etc. give the others. From the command
line, FedAvg is
  --config.client_optimizer.learning_rate=0.1 --config.server_optimizer='sgd(learning_rate=3.1623)'
Differences from the authors' runs: Keras' Adam puts epsilon outside the bias correction
(optax's inside: the same once 1 - 0.999^t is near 1, after a few thousand rounds); optax's
Yogi starts its accumulator at 1e-6, theirs at 0; no L2 weight decay (theirs 1e-4); one
crop per image per run rather than one per visit.

Offline: place TFF's `cifar100.sqlite.lzma` (or `fed_cifar100_{train,test}.h5`) in a
folder and pass --config.data_dir=FOLDER; with network access it is downloaded once into
~/.cache/fedjax_compress.
"""

import ml_collections

from configs import default

# Reddi et al.'s best learning rates for CIFAR-100 (see the docstring): the client's SGD
# learning rate, the server optimizer and its arguments.
METHODS = {
  "fedavg": (10**-1, "sgd", {"learning_rate": 10**0.5}),
  "fedavgm": (10**-1.5, "sgd", {"learning_rate": 1.0, "momentum": 0.9}),
  "fedadagrad": (
    10**-1,
    "adagrad",
    {"learning_rate": 10**-1, "initial_accumulator_value": 0.0, "eps": 10**-2},
  ),
  "fedadam": (10**-1.5, "adam", {"learning_rate": 1.0, "eps": 10**-1}),
  "fedyogi": (10**-1.5, "yogi", {"learning_rate": 1.0, "eps": 10**-1}),
}


def get_config(method: str = "fedadam") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = default.component("cifar100", crop_size=24, distort=True)
  config.model = default.component("resnet18_gn")
  config.rounds = 4000
  config.clients_per_round = 10
  config.batch_size = 20
  config.epochs = 1
  default.set_fedopt(config, METHODS, method)
  config.eval_every = 100
  config.eval_batch_size = 500
  config.checkpoint_every = 100
  return config
