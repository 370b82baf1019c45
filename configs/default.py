"""The default experiment: FedAvg on the embedded offline dataset (scikit-learn digits).

A config is run-level keys plus components. A component is `{name, ...arguments}`: the
name picks a factory from a registry and every other key is one of that factory's
arguments, so a key the chosen component does not read stops the run before any work
(e.g. `config.aggregator.stages` with `name="mean"`). Set a key with
`--config.aggregator.threshold=50000`, replace a whole component with
`--config.client_optimizer='adam(learning_rate=0.01, b1=0.9)'`.

The README's configs reference documents every key. Variants import this file and
override what differs.
"""

import ml_collections


def component(name: str, **arguments) -> ml_collections.ConfigDict:
  """A component config: its factory's `name` and the arguments given to it."""
  return ml_collections.ConfigDict({"name": name, **arguments})


def set_fedopt(config: ml_collections.ConfigDict, methods: dict, method: str) -> None:
  """Sets the client and server optimizers of `method` from a table
  {method: (client SGD learning rate, server optimizer name, its arguments)}, the form
  of Reddi et al.'s tuned hyperparameters in the task configs."""
  if method not in methods:
    raise ValueError(f"method={method!r} is not one of {sorted(methods)}.")
  client_lr, server, arguments = methods[method]
  config.client_optimizer = component("sgd", learning_rate=client_lr)
  config.server_optimizer = component(server, **arguments)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Data: a source of fedjax_compress.data (sklearn_digits, emnist, leaf, tfds:NAME) and
  # its loader's arguments (data_dir, cache_dir, only_digits, ...).
  config.data = component("sklearn_digits")
  # Model: a registered model (models.register_model) and its arguments; the number of
  # classes and the input shape come from the data.
  config.model = component("cnn")
  # Federated schedule.
  config.rounds = 30
  config.clients_per_round = 10
  config.batch_size = 20
  config.epochs = 1
  config.seed = 0
  config.shuffle = True
  # Optimizers: any optax optimizer by name, with its own arguments. The server applies
  # -aggregate as a gradient: sgd(1.0) is FedAvg; sgd with momentum FedAvgM; adam FedAdam.
  # The seed configs use client SGD 0.02; 0.1 suits the small embedded data.
  config.client_optimizer = component("sgd", learning_rate=0.1)
  config.server_optimizer = component("sgd", learning_rate=1.0)
  config.client_weighting = "num_examples"  # or "uniform"
  config.proximal_mu = 0.0  # FedProx
  config.fed_sgd = False  # clients send their gradient; needs client_optimizer.name="none"
  # Aggregation and compression: a registered aggregator (aggregators.register_aggregator).
  config.aggregator = component("mean")
  # The downlink: "float32", or "encoded" with stages.
  config.broadcast = component("float32")
  config.bit_accounting = "exact"  # or "tff"
  config.imports = ""  # comma-separated modules to import first (custom components)
  # Execution, evaluation, logging: none of these changes a result.
  config.strategy = "auto"  # "auto", "sequential", "vmap", "chunked", "sharded"
  config.chunk_size = 8
  config.client_threads = 2  # clients "sequential" trains at once (same results for any value)
  config.eval_every = 5
  config.eval_batch_size = 500
  config.log_every = 1
  # Checkpoints (orbax) in WORKDIR/checkpoints; re-running with the same --workdir resumes.
  config.checkpoint_every = 10  # rounds; 0 disables
  config.keep_checkpoints = 3
  return config
