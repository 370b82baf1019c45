"""Shakespeare next-character prediction as in Reddi et al., "Adaptive Federated
Optimization" (ICLR 2021).

TFF's federated Shakespeare (715 speaking roles), TFF's preprocessing (sequences of 80
characters plus BOS/EOS/pad, `fedjax_compress/data/text.py`), the character LSTM
(`char_lstm`: embedding 8, 2 x LSTM 256); 10 clients a round, batch 4, 1 local epoch,
1200 rounds, client SGD, weighted by examples (sequences). Schedule and learning rates
are the authors' (google-research/federated, `optimization/docs/hyperparameters.md`,
"Default values" and "Best hyperparameters", shakespeare_character; Reddi et al. 2021,
appendix). Their best values, base-10 logarithms:

  method       client SGD   server                    epsilon
  FedAvg       0            SGD 0                     -
  FedAvgM      0            SGD -0.5, momentum 0.9    -
  FedAdagrad   0            Adagrad -0.5              -1
  FedAdam      0            Adam -2                   -3
  FedYogi      0            Yogi -2                   -3

`get_config()` is FedAvg (client and server SGD, learning rate 1); `get_config("fedadam")`
etc. give the others (Adam's betas: Keras' 0.9/0.999, as the authors kept them). From the
command line, FedAdam is --config.server_optimizer='adam(learning_rate=0.01, eps=0.001)'. Reported metrics (`models.sequence_task`): eval/accuracy counts
every non-pad target, the figure Reddi et al. and TFF report for Shakespeare;
eval/accuracy_no_oov and eval/accuracy_no_oov_no_eos leave out OOV (and EOS) targets.
Differences from the authors' runs: the loss skips pad targets (TFF's Keras loss scores
them too); Keras' Adam puts epsilon outside the bias correction; Keras' unit forget-gate
bias is not used (`models/language.py`).

Data: --config.data_dir=FOLDER holding TFF's `shakespeare.sqlite[.lzma]`, the legacy
`shakespeare_{train,test}.h5`, or LEAF's `{train,test}/*.json` (`load_shakespeare`).
"""

import ml_collections

from configs import default

# Reddi et al.'s best learning rates for Shakespeare (see the docstring): the client's SGD
# learning rate, the server optimizer and its arguments.
METHODS = {
  "fedavg": (1.0, "sgd", {"learning_rate": 1.0}),
  "fedavgm": (1.0, "sgd", {"learning_rate": 10**-0.5, "momentum": 0.9}),
  "fedadagrad": (
    1.0,
    "adagrad",
    {"learning_rate": 10**-0.5, "initial_accumulator_value": 0.0, "eps": 10**-1},
  ),
  "fedadam": (1.0, "adam", {"learning_rate": 10**-2, "eps": 10**-3}),
  "fedyogi": (1.0, "yogi", {"learning_rate": 10**-2, "eps": 10**-3}),
}


def get_config(method: str = "fedavg") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = default.component("shakespeare", data_dir=None, seq_len=80)
  config.model = default.component("char_lstm")
  config.rounds = 1200
  config.clients_per_round = 10
  config.batch_size = 4
  config.epochs = 1
  default.set_fedopt(config, METHODS, method)
  # Evaluating all 5,490 test sequences takes tens of seconds on a CPU.
  config.eval_every = 100
  config.eval_batch_size = 500
  config.checkpoint_every = 100
  return config
