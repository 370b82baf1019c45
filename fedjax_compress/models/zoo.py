"""The models of the FedAvg paper (McMahan et al., 2017), as Flax modules."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from fedjax_compress.models.model import Model, from_flax
from fedjax_compress.registry import Registry

EMNIST_INPUT_SHAPE = (28, 28, 1)
CIFAR_INPUT_SHAPE = (32, 32, 3)


def _conv_params(module: nn.Module, x, features: int, kernel_size: tuple[int, int]):
  """`nn.Conv`'s parameters: `kernel` [kh, kw, in, out] and `bias` [out]."""
  kernel = module.param(
    "kernel", nn.initializers.lecun_normal(), tuple(kernel_size) + (x.shape[-1], features)
  )
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
  return jnp.concatenate(
    [padded[..., i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)], axis=-1
  )


class ShiftedConv(nn.Module):
  """`nn.Conv` (SAME padding, stride 1) as shifted copies of the image times a matrix.

  The same parameters and function as `nn.Conv`. On XLA:CPU its backward pass is two
  dense matrix products, where `nn.Conv`'s backward convolutions are slow; in `lax.scan`
  and under `vmap` it avoids XLA:CPU's slow convolution paths (benchmarks/RESULTS.md,
  "Step forms").
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
      x, self.kernel_size, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
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
    raise ValueError(
      f"max_pool_2x2 needs an even height and width; got [B, H, W, C] = "
      f"{list(x.shape)}. For odd sizes use pool='window' (nn.max_pool, SAME "
      f"padding)."
    )
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


model_registry: Registry[Model] = Registry("model", context=("num_classes", "input_shape"))


def register_model(name: str, factory: Callable[..., Model] | None = None):
  """Registers a model factory under `name`; without `factory`, a decorator that does.

  `factory(num_classes, input_shape, **its own keyword arguments) -> Model`; it takes
  `num_classes` and `input_shape` (supplied by the run, from the data) only if its
  signature names them. A config builds it as `model.name=name` plus its keyword
  arguments, checked against the signature (see `fedjax_compress.registry`), so give it
  explicit keyword arguments rather than `**kwargs`.
  """
  return model_registry.register(name, factory)


@register_model("cnn")
def cnn(
  num_classes: int,
  input_shape: tuple[int, ...] = EMNIST_INPUT_SHAPE,
  conv: str = "xla",
  pool: str = "reshape",
) -> Model:
  """The FedAvg CNN (`FedAvgCNN`), its layers computed as `conv` and `pool` say."""
  return from_flax(
    FedAvgCNN(num_classes=num_classes, conv=conv, pool=pool), input_shape, num_classes
  )


@register_model("cnn_shifted")
def cnn_shifted(
  num_classes: int, input_shape: tuple[int, ...] = EMNIST_INPUT_SHAPE, pool: str = "reshape"
) -> Model:
  """The FedAvg CNN, its convolutions as shifted images times a matrix (`ShiftedConv`)."""
  return cnn(num_classes, input_shape, conv="shifted", pool=pool)


@register_model("cnn_patches")
def cnn_patches(
  num_classes: int, input_shape: tuple[int, ...] = EMNIST_INPUT_SHAPE, pool: str = "reshape"
) -> Model:
  """The FedAvg CNN, its convolutions as image patches times a matrix (`PatchConv`)."""
  return cnn(num_classes, input_shape, conv="patches", pool=pool)


@register_model("cnn_reference")
def cnn_reference(
  num_classes: int, input_shape: tuple[int, ...] = EMNIST_INPUT_SHAPE, conv: str = "xla"
) -> Model:
  """The FedAvg CNN with Flax's own layers (`nn.Conv`, `nn.max_pool`)."""
  return cnn(num_classes, input_shape, conv=conv, pool="window")


@register_model("mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...], hidden: int = 200) -> Model:
  """The FedAvg "2NN" (`FedAvgMLP`) with `hidden` units per hidden layer."""
  return from_flax(FedAvgMLP(num_classes=num_classes, hidden=hidden), input_shape, num_classes)


@register_model("cifar_cnn")
def cifar_cnn(num_classes: int, input_shape: tuple[int, ...] = CIFAR_INPUT_SHAPE) -> Model:
  """The small CIFAR CNN (`CifarCNN`)."""
  return from_flax(CifarCNN(num_classes=num_classes), input_shape, num_classes)


def create_model(
  name: str, num_classes: int, input_shape: tuple[int, ...] = EMNIST_INPUT_SHAPE, **kwargs: Any
) -> Model:
  """A registered model by name, built with `kwargs` (checked against its factory).

  Built in: "cnn"; "cnn_shifted" and "cnn_patches" (the same CNN, its convolutions as
  matrix products); "cnn_reference" (the same CNN with Flax's own layers, `nn.Conv` and
  `nn.max_pool`); "mlp"; "cifar_cnn" (pass CIFAR_INPUT_SHAPE). Add others with
  `register_model`. An unknown name or argument raises `registry.ComponentError` (a
  `ValueError`) that names it.
  """
  return model_registry.create(
    name, kwargs, num_classes=num_classes, input_shape=tuple(input_shape)
  )


def model_names() -> list[str]:
  """Names accepted by `create_model`: the registered models."""
  return model_registry.names()
