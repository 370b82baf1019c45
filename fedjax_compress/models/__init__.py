"""Models: a functional `Model` and the FedAvg paper's networks."""

from fedjax_compress.models.model import (Model, from_flax, masked_loss, masked_metric_sums,
                                          num_parameters)
from fedjax_compress.models.zoo import (CONVS, POOLS, FedAvgCNN, FedAvgMLP, create_model,
                                        max_pool_2x2, model_names, shifted_patches)
