"""The EMNIST character-recognition CNN of Reddi et al., "Adaptive Federated Optimization"
(ICLR 2021), registered as `cnn_dropout`.

The layers, as in the authors' code (google-research/federated,
`utils/models/emnist_models.py`, `create_conv_dropout_model`, the `cnn` of their EMNIST CR
task):

  conv 3x3, 32, ReLU (VALID) - conv 3x3, 64, ReLU (VALID) - max-pool 2x2 - dropout 0.25 -
  flatten - dense 128, ReLU - dropout 0.5 - dense num_classes

with Glorot-normal kernels and zero biases (Keras' `GlorotNormal`, a truncated normal:
Flax's `glorot_normal`). On 28x28x1 images: 1,206,590 parameters for 62 classes,
1,199,882 for 10. Keras' last layer applies the softmax; here the model returns logits (the
loss applies it).

Dropout is active when training: `apply(params, x, train=True, rng=key)` draws its masks
from `key` (the client step's key, see `models.from_flax`); `train=False` (evaluation)
uses no dropout.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from fedjax_compress.models.model import Model, from_flax
from fedjax_compress.models.zoo import EMNIST_INPUT_SHAPE, register_model


class ConvDropoutCNN(nn.Module):
  """Reddi et al.'s EMNIST CNN (see the module docstring)."""

  num_classes: int = 62
  conv_dropout: float = 0.25
  dense_dropout: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    init = nn.initializers.glorot_normal()
    for features in (32, 64):
      x = nn.relu(nn.Conv(features, (3, 3), padding="VALID", kernel_init=init)(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    x = nn.Dropout(self.conv_dropout, deterministic=not train)(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128, kernel_init=init)(x))
    x = nn.Dropout(self.dense_dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=init)(x)


@register_model("cnn_dropout")
def cnn_dropout(
  num_classes: int,
  input_shape: tuple[int, ...] = EMNIST_INPUT_SHAPE,
  conv_dropout: float = 0.25,
  dense_dropout: float = 0.5,
) -> Model:
  """Reddi et al.'s EMNIST CNN with dropout (`ConvDropoutCNN`)."""
  for name, rate in (("conv_dropout", conv_dropout), ("dense_dropout", dense_dropout)):
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"cnn_dropout: {name}={rate} is invalid: a dropout rate is in [0, 1).")
  module = ConvDropoutCNN(
    num_classes=num_classes, conv_dropout=conv_dropout, dense_dropout=dense_dropout
  )
  return from_flax(module, input_shape, num_classes)
