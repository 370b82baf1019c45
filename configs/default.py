"""The default experiment: FedAvg on the embedded offline dataset (scikit-learn digits).

Every key is documented in the README's configs reference. Variants import this file
and override what differs.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Data.
  config.dataset = "sklearn_digits"  # "emnist" (TFF), "leaf" (LEAF FEMNIST), "sklearn_digits"
  config.data_dir = ""  # local files; "" means the cache / download (emnist) or none
  config.cache_dir = ""  # "" means $FEDJAX_COMPRESS_CACHE or ~/.cache/fedjax_compress
  config.only_digits = True
  config.shuffle = True
  # Model.
  # "cnn"; the same CNN as "cnn_shifted"/"cnn_patches" (matmuls), "cnn_reference" (Flax's
  # pooling); "mlp" (2NN); "cifar_cnn".
  config.model = "cnn"
  # Federated training.
  config.rounds = 30
  config.clients_per_round = 10
  config.batch_size = 20
  config.epochs = 1
  config.seed = 0
  config.client_optimizer = "sgd"  # "sgd", "momentum", "adam"
  config.client_lr = 0.1  # the seed configs use 0.02; 0.1 suits the small embedded data
  config.server_optimizer = "sgd"  # "sgd" (FedAvg), "momentum" (FedAvgM), "adam", "yogi"
  config.server_lr = 1.0
  config.server_momentum = 0.9
  config.server_beta2 = 0.99
  config.server_eps = 1e-3
  config.client_weighting = "num_examples"  # or "uniform"
  config.proximal_mu = 0.0  # FedProx
  config.fed_sgd = False
  # Aggregation and compression.
  config.aggregator = "mean"  # "mean", "sum", "encoded_mean", "compression", "robust", "dp"
  config.stages = ""  # for "encoded_mean", e.g. "hadamard,uniform_quantize(bits=2)"
  config.encode_threshold = 20_000  # leaves with more elements are encoded
  config.quantization_bits = 8  # for "compression"
  config.weighted_aggregation = True
  config.zeroing = False  # wrap mean/sum/encoded_mean in adaptive zeroing
  config.clipping = False  # ... and adaptive L2 clipping
  config.dp_noise_multiplier = 0.0
  config.dp_clip_norm = 0.1
  config.bit_accounting = "exact"  # or "tff"
  config.error_feedback = ""  # for "encoded_mean": "ef" or "ef21" (per-client state)
  config.client_state_dtype = "float32"  # storage of per-client rows: or "bfloat16"
  config.broadcast_stages = ""  # downlink: the model through stages, e.g. "hadamard,eden(bits=4)"
  config.imports = ""  # comma-separated modules to import first (custom stages)
  # Execution, evaluation, logging.
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
