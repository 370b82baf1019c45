"""ResNet-18 with GroupNorm, the CIFAR-100 model of Reddi et al., "Adaptive Federated
Optimization" (ICLR 2021), registered as `resnet18_gn`.

Reddi et al. replace every BatchNorm of ResNet-18 with GroupNorm (after Hsieh et al., "The
Non-IID Data Quagmire of Decentralized Machine Learning", ICML 2020), because batch
statistics are unreliable across non-IID clients. This module follows their code,
google-research/federated `utils/models/resnet_models.py` (`create_resnet18`, norm='group'):

- a pre-activation ResNet (ResNet v2; He et al., "Identity Mappings in Deep Residual
  Networks", 2016): stem conv 7x7/2, 64 filters -> GN -> ReLU -> max-pool 3x3/2 (SAME);
- four stages of two basic blocks, 64, 128, 256, 512 filters. A block is
  [GN -> ReLU ->] conv 3x3 -> GN -> ReLU -> conv 3x3, plus the shortcut: identity, or a
  1x1 conv -> GN where the shape changes. The first block of the first stage skips its
  first GN -> ReLU (the stem just applied them);
- GN -> ReLU -> global average pool -> dense num_classes.

GroupNorm has 2 groups and epsilon 1e-3 (TensorFlow Addons' `GroupNormalization`
defaults, which that code uses). Convolutions have no bias and He-normal kernels; the
dense layer has N(0, 0.01^2) kernels. The reference's stages all have stride 1 (its
`_residual_block` is never given a stride), so after the stem a 24x24 crop stays 6x6 in
every stage; `downsample=True` gives the usual stride 2 at the first block of stages 2-4
instead (on the block's first convolution and its shortcut). Not included: the
reference's L2 weight decay (1e-4, a Keras kernel regularizer added to the loss), which a
`Model` cannot express; its softmax (the model returns logits).

On any input size, with 100 classes: 11,227,812 parameters (with or without `downsample`).
"""

from __future__ import annotations

from typing import Sequence

import jax
from flax import linen as nn

from fedjax_compress.models.model import Model, from_flax
from fedjax_compress.models.zoo import CIFAR_INPUT_SHAPE, register_model

GROUPS = 2
EPSILON = 1e-3


def _conv(features: int, kernel: int, stride: int = 1, name: str | None = None) -> nn.Conv:
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding="SAME",
    use_bias=False,
    kernel_init=nn.initializers.he_normal(),
    name=name,
  )


def _norm(name: str | None = None) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=GROUPS, epsilon=EPSILON, name=name)


class BasicBlockV2(nn.Module):
  """A pre-activation basic block: two 3x3 convolutions and a shortcut."""

  features: int
  stride: int = 1
  preactivate: bool = True  # False: the first block, right after the stem's GN -> ReLU

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.relu(_norm()(x)) if self.preactivate else x
    y = _conv(self.features, 3, self.stride)(y)
    y = _conv(self.features, 3)(nn.relu(_norm()(y)))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = _norm(name="shortcut_norm")(_conv(self.features, 1, self.stride, name="shortcut")(x))
    return x + y


class ResNetGN(nn.Module):
  """A pre-activation ResNet with GroupNorm (see the module docstring)."""

  num_classes: int = 100
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  initial_filters: int = 64
  downsample: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(_norm()(_conv(self.initial_filters, 7, 2)(x)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for stage, blocks in enumerate(self.stage_sizes):
      features = self.initial_filters * 2**stage
      for block in range(blocks):
        stride = 2 if self.downsample and stage > 0 and block == 0 else 1
        x = BasicBlockV2(features, stride, preactivate=(stage, block) != (0, 0))(x)
    x = nn.relu(_norm()(x)).mean(axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01))(x)


@register_model("resnet18_gn")
def resnet18_gn(
  num_classes: int, input_shape: tuple[int, ...] = CIFAR_INPUT_SHAPE, downsample: bool = False
) -> Model:
  """ResNet-18 (basic blocks, 2-2-2-2) with GroupNorm (`ResNetGN`), Reddi et al.'s CIFAR-100
  model; `downsample=True`: stride 2 at stages 2-4 instead of the reference's stride 1."""
  if len(input_shape) != 3:
    raise ValueError(f"resnet18_gn takes images [H, W, C]; got input_shape={input_shape}.")
  return from_flax(
    ResNetGN(num_classes=num_classes, downsample=downsample), input_shape, num_classes
  )
