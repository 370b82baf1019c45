"""The models of the FedAvg paper (McMahan et al., 2017), as Flax modules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from fedjax_compress.models.model import Model, from_flax

EMNIST_INPUT_SHAPE = (28, 28, 1)
CIFAR_INPUT_SHAPE = (32, 32, 3)


class PatchConv(nn.Module):
  """`nn.Conv` (SAME padding, stride 1) as image patches times a matrix.

  The same parameters (`kernel` [kh, kw, in, out], `bias`) and function as `nn.Conv`; under
  `vmap` over clients with their own kernels it is a batched matrix product, where
  `nn.Conv` becomes a convolution with one feature group per client.
  """
  features: int
  kernel_size: tuple[int, int]

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        self.kernel_size + (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    patches = jax.lax.conv_general_dilated_patches(
        x, self.kernel_size, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # Patch features are ordered (in, kh, kw).
    matrix = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(-1, self.features)
    return patches @ matrix + bias


class FedAvgCNN(nn.Module):
  """conv5x5x32 - pool - conv5x5x64 - pool - dense512 - dense(num_classes).

  1,663,370 parameters for 10 classes, 1,690,046 for 62. `patches=True` computes the
  convolutions as patches times a matrix (`PatchConv`): the same function and parameters.
  """
  num_classes: int = 10
  patches: bool = False

  @nn.compact
  def __call__(self, x):
    conv = PatchConv if self.patches else nn.Conv
    for i, features in enumerate((32, 64)):
      x = nn.relu(conv(features, (5, 5), name=f"Conv_{i}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(512)(x))
    return nn.Dense(self.num_classes)(x)


class FedAvgMLP(nn.Module):
  """The "2NN": two hidden layers of 200 ReLU units (199,210 parameters for 10 classes)."""
  num_classes: int = 10
  hidden: int = 200

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    for _ in range(2):
      x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


class CifarCNN(nn.Module):
  """A small CNN for 32x32x3 images: conv3x3x32 - pool - conv3x3x64 - pool - dense128.

  545,098 parameters for 10 classes on CIFAR_INPUT_SHAPE; any [H, W, C] input works.
  """
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    for features in (32, 64):
      x = nn.relu(nn.Conv(features, (3, 3), padding="SAME")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128)(x))
    return nn.Dense(self.num_classes)(x)


_MODULES = {"cnn": FedAvgCNN, "cnn_patches": functools.partial(FedAvgCNN, patches=True),
            "mlp": FedAvgMLP, "cifar_cnn": CifarCNN}


def create_model(name: str, num_classes: int,
                 input_shape: tuple[int, ...] = EMNIST_INPUT_SHAPE) -> Model:
  """A model of the zoo by name: "cnn", "cnn_patches" (the same CNN, its convolutions as
  matrix products), "mlp" or "cifar_cnn" (pass CIFAR_INPUT_SHAPE)."""
  if name not in _MODULES:
    raise ValueError(f"Unknown model {name!r}; valid names: {sorted(_MODULES)}.")
  return from_flax(_MODULES[name](num_classes=num_classes), input_shape, num_classes)


def model_names() -> list[str]:
  """Names accepted by `create_model`."""
  return sorted(_MODULES)
