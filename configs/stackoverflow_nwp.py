"""Stack Overflow next-word prediction ("Stack Overflow NWP") as in Reddi et al.,
"Adaptive Federated Optimization" (ICLR 2021).

TFF's federated Stack Overflow (342,477 training users, read lazily: a round reads only
its clients), TFF's preprocessing (`fedjax_compress/data/stackoverflow.py`): the 10,000
most frequent words, 1 OOV bucket, sequences of 20 with BOS/EOS/pad, at most 1000
sentences per training client, evaluation on 10,000 test sentences; the word LSTM
(`word_lstm`: embedding 96, LSTM 670, dense 96, dense 10,004); 50 clients a round, batch
16, 1 local epoch, 1500 rounds, client SGD, weighted by examples (sequences). Schedule,
sizes and learning rates are the authors' (google-research/federated,
`optimization/docs/hyperparameters.md`, "Default values", "Stack Overflow NWP" and "Best
hyperparameters"; Reddi et al. 2021, appendix). Their best learning rates, base-10
logarithms:

  method       client SGD   server                    epsilon
  FedAvg       -0.5         SGD 0                     -
  FedAvgM      -0.5         SGD 0, momentum 0.9       -
  FedAdagrad   -0.5         Adagrad -1.5              -4
  FedAdam      -0.5         Adam -2                   -5
  FedYogi      -0.5         Yogi -2                   -5

`get_config()` is FedAdam; `get_config("fedavg")` etc. give the others. From the command
line, FedAvg is --config.server_optimizer='sgd(learning_rate=1.0)'. (See
configs/cifar100.py for how optax's Adam and Yogi differ from the Keras ones used.)

Data: --config.data_dir=FOLDER holding TFF's `stackoverflow.sqlite.lzma` (decompressed
once into the cache) or `stackoverflow.sqlite`, and `stackoverflow.word_count` (or its
`.tar.bz2`) for the vocabulary; with network access both are downloaded into
~/.cache/fedjax_compress. Without the word counts: --config.data.vocab_from=train.
"""

import ml_collections

from configs import default

# Reddi et al.'s best learning rates for Stack Overflow NWP (see the docstring): the
# client's SGD learning rate, the server optimizer and its arguments.
METHODS = {
  "fedavg": (10**-0.5, "sgd", {"learning_rate": 1.0}),
  "fedavgm": (10**-0.5, "sgd", {"learning_rate": 1.0, "momentum": 0.9}),
  "fedadagrad": (
    10**-0.5,
    "adagrad",
    {"learning_rate": 10**-1.5, "initial_accumulator_value": 0.0, "eps": 10**-4},
  ),
  "fedadam": (10**-0.5, "adam", {"learning_rate": 10**-2, "eps": 10**-5}),
  "fedyogi": (10**-0.5, "yogi", {"learning_rate": 10**-2, "eps": 10**-5}),
}


def get_config(method: str = "fedadam") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = default.component(
    "stackoverflow",
    vocab_size=10_000,
    num_oov_buckets=1,
    seq_len=20,
    max_elements_per_client=1000,
    num_validation_examples=10_000,
  )
  # The vocabulary (10,004 logits) and the sequence length come from the data.
  config.model = default.component("word_lstm", embed_size=96, hidden_size=670, num_oov_buckets=1)
  config.rounds = 1500
  config.clients_per_round = 50
  config.batch_size = 16
  config.epochs = 1
  default.set_fedopt(config, METHODS, method)
  config.eval_every = 100
  config.eval_batch_size = 500
  config.checkpoint_every = 100
  return config
