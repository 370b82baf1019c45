"""Models: a functional `Model`, its `Task` (loss and metrics), the FedAvg paper's
networks and the language models of Reddi et al. 2021."""

from fedjax_compress.models.model import (
  CLASSIFICATION,
  Model,
  Task,
  check_task,
  cross_entropy,
  from_flax,
  is_stateful,
  masked_loss,
  masked_metric_sums,
  num_parameters,
)
from fedjax_compress.models.zoo import (
  CIFAR_INPUT_SHAPE,
  CONVS,
  EMNIST_INPUT_SHAPE,
  POOLS,
  FedAvgCNN,
  FedAvgMLP,
  create_model,
  max_pool_2x2,
  model_names,
  model_registry,
  register_model,
  shifted_patches,
)
from fedjax_compress.models.language import (
  SEQUENCE_ACCURACIES,
  LSTMLanguageModel,
  char_lstm,
  sequence_loss,
  sequence_metric_sums,
  sequence_task,
  word_lstm,
)
from fedjax_compress.models import reddi, resnet  # registers cnn_dropout, resnet18_gn
