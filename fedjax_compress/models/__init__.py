"""Models: a functional `Model` and the FedAvg paper's networks."""

from fedjax_compress.models.model import (Model, from_flax, is_stateful, masked_loss,
                                          masked_metric_sums, num_parameters)
from fedjax_compress.models.zoo import (CIFAR_INPUT_SHAPE, CONVS, EMNIST_INPUT_SHAPE, POOLS,
                                        FedAvgCNN, FedAvgMLP, create_model, max_pool_2x2,
                                        model_names, model_registry, register_model,
                                        shifted_patches)
