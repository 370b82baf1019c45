"""FedAvg on CIFAR-10 from TensorFlow Datasets: the framework is not EMNIST-only.

CIFAR-10's 50,000 training images are split over 100 synthetic clients with a
Dirichlet(0.5) label skew (test: 10,000 images over 20 clients); a small CNN
(`cifar_cnn`, 545,098 parameters, input 32x32x3) trains with 10 clients a round.
Colour pixels are kept as TFDS gives them, scaled to [0, 1].

Needs CIFAR-10 prepared in a TFDS data_dir (once, with network):
  python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10').download_and_prepare()"
then
  python -m experiments.main --config=configs/cifar10_fedavg.py --workdir=/tmp/cifar \
      [--config.data.data_dir=TFDS_DATA_DIR] [--config.aggregator.name=compression]
"""

from configs import default


def get_config():
  config = default.get_config()
  # --config.data.data_dir=DIR: the TFDS data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
  # num_clients and alpha partition the TFDS splits into clients. alpha is a string so
  # that --config.data.alpha=iid works; any float > 0 is a Dirichlet skew.
  config.data = default.component("tfds:cifar10", num_clients=100, alpha="0.5")
  config.model = default.component("cifar_cnn")
  config.rounds = 500
  config.clients_per_round = 10
  config.batch_size = 20
  config.epochs = 1
  config.client_optimizer = default.component("sgd", learning_rate=0.05)
  config.server_optimizer = default.component("sgd", learning_rate=1.0)
  config.eval_every = 25
  return config
