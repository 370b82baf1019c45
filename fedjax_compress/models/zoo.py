"""The models of the FedAvg paper (McMahan et al., 2017), as Flax modules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from fedjax_compress.models.model import Model, from_flax

EMNIST_INPUT_SHAPE = (28, 28, 1)
CIFAR_INPUT_SHAPE = (32, 32, 3)


def _conv_params(module: nn.Module, x, features: int, kernel_size: tuple[int, int]):
  """`nn.Conv`'s parameters: `kernel` [kh, kw, in, out] and `bias` [out]."""
  kernel = module.param("kernel", nn.initializers.lecun_normal(),
                        tuple(kernel_size) + (x.shape[-1], features))
  bias = module.param("bias", nn.initializers.zeros_init(), (features,))
  return kernel, bias


def shifted_patches(x: jax.Array, kernel_size: tuple[int, int]) -> jax.Array:
  """Each pixel's SAME-padded neighbourhood: [..., H, W, C] -> [..., H, W, kh * kw * C].

  Built from kh * kw shifted slices of the padded image, features ordered (kh, kw, C):
  a kernel [kh, kw, C, out] reshaped to [kh * kw * C, out] multiplies it.
  """
  if x.ndim < 3:
    raise ValueError(f"shifted_patches needs images [..., H, W, C]; got shape {x.shape}.")
  (kh, kw), (height, width) = kernel_size, x.shape[-3:-1]
  pads = [(0, 0)] * (x.ndim - 3) + [((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)]
  padded = jnp.pad(x, pads)
  return jnp.concatenate([padded[..., i:i + height, j:j + width, :]
                          for i in range(kh) for j in range(kw)], axis=-1)


class ShiftedConv(nn.Module):
  """`nn.Conv` (SAME padding, stride 1) as shifted copies of the image times a matrix.

  The same parameters and function as `nn.Conv`. On XLA:CPU its backward pass is two
  dense matrix products, where `nn.Conv`'s backward convolutions are slow; in `lax.scan`
  and under `vmap` it avoids XLA:CPU's slow convolution paths (benchmarks/RESULTS.md,
  "CPU efficiency").
  """
  features: int
  kernel_size: tuple[int, int]

  @nn.compact
  def __call__(self, x):
    kernel, bias = _conv_params(self, x, self.features, self.kernel_size)
    return shifted_patches(x, self.kernel_size) @ kernel.reshape(-1, self.features) + bias


class PatchConv(nn.Module):
  """`nn.Conv` (SAME padding, stride 1) as image patches times a matrix.

  The same parameters and function as `nn.Conv`; under `vmap` over clients with their
  own kernels it is a batched matrix product, where `nn.Conv` becomes a convolution with
  one feature group per client.
  """
  features: int
  kernel_size: tuple[int, int]

  @nn.compact
  def __call__(self, x):
    kernel, bias = _conv_params(self, x, self.features, self.kernel_size)
    patches = jax.lax.conv_general_dilated_patches(
        x, self.kernel_size, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # Patch features are ordered (in, kh, kw).
    matrix = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(-1, self.features)
    return patches @ matrix + bias


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, of [B, H, W, C] with even H and W, as one reduction.

  The same values as `nn.max_pool`; XLA:CPU computed the gradient of `nn.max_pool`'s
  reduce-window about twice as slowly.
  """
  batch, height, width, channels = x.shape
  if height % 2 or width % 2:
    raise ValueError(f"max_pool_2x2 needs an even height and width; got [B, H, W, C] = "
                     f"{list(x.shape)}. For odd sizes use pool='window' (nn.max_pool, SAME "
                     f"padding).")
  return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def window_max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling, stride 2, with Flax's `nn.max_pool` (a reduce-window)."""
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


CONVS = {"xla": nn.Conv, "shifted": ShiftedConv, "patches": PatchConv}
POOLS = {"reshape": max_pool_2x2, "window": window_max_pool_2x2}


class FedAvgCNN(nn.Module):
  """conv5x5x32 - pool - conv5x5x64 - pool - dense512 - dense(num_classes).

  1,663,370 parameters for 10 classes, 1,690,046 for 62. `conv` and `pool` pick how
  the layers are computed, all with the same parameters and function: `conv` "xla"
  (`nn.Conv`), "shifted" (`ShiftedConv`) or "patches" (`PatchConv`); `pool` "reshape"
  (`max_pool_2x2`) or "window" (`nn.max_pool`).
  """
  num_classes: int = 10
  conv: str = "xla"
  pool: str = "reshape"

  @nn.compact
  def __call__(self, x):
    for field, value, valid in (("conv", self.conv, CONVS), ("pool", self.pool, POOLS)):
      if value not in valid:
        raise ValueError(f"Unknown {field} {value!r}; valid: {sorted(valid)}.")
    conv, pool = CONVS[self.conv], POOLS[self.pool]
    for i, features in enumerate((32, 64)):
      x = pool(nn.relu(conv(features, (5, 5), name=f"Conv_{i}")(x)))
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


_MODULES = {"cnn": FedAvgCNN,
            "cnn_shifted": functools.partial(FedAvgCNN, conv="shifted"),
            "cnn_patches": functools.partial(FedAvgCNN, conv="patches"),
            "cnn_reference": functools.partial(FedAvgCNN, pool="window"),
            "mlp": FedAvgMLP, "cifar_cnn": CifarCNN}


def create_model(name: str, num_classes: int,
                 input_shape: tuple[int, ...] = EMNIST_INPUT_SHAPE) -> Model:
  """A model of the zoo by name: "cnn"; "cnn_shifted" and "cnn_patches" (the same CNN, its
  convolutions as matrix products); "cnn_reference" (the same CNN with Flax's own layers,
  `nn.Conv` and `nn.max_pool`); "mlp"; or "cifar_cnn" (pass CIFAR_INPUT_SHAPE)."""
  if name not in _MODULES:
    raise ValueError(f"Unknown model {name!r}; valid names: {sorted(_MODULES)}.")
  return from_flax(_MODULES[name](num_classes=num_classes), input_shape, num_classes)


def model_names() -> list[str]:
  """Names accepted by `create_model`."""
  return sorted(_MODULES)
