"""ResNet-18 with GroupNorm (models/resnet.py), Reddi et al.'s CIFAR-100 network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_compress import models


def test_resnet18_gn_is_reddi_et_als_resnet():
  model = models.create_model("resnet18_gn", 100, (24, 24, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  assert models.num_parameters(shapes) == 11_227_812
  norms = [p for p in jax.tree_util.tree_leaves_with_path(shapes) if "GroupNorm" in str(p[0])]
  assert norms, "GroupNorm layers expected"
  logits = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((2, 24, 24, 3), jnp.float32))
  assert logits.shape == (2, 100)
  with pytest.raises(ValueError, match="input_shape"):
    models.create_model("resnet18_gn", 100, (24, 24))


def test_group_norm_normalizes_two_groups_of_channels():
  """With the first GroupNorm's scale 1 and bias 0, each half of the stem's channels is
  normalized on its own (2 groups)."""
  from fedjax_compress.models import resnet

  norm = resnet._norm()
  x = jax.random.normal(jax.random.key(0), (1, 3, 3, 8)) * jnp.arange(1.0, 9.0)
  y = norm.apply(norm.init(jax.random.key(1), x), x)
  for half in (y[..., :4], y[..., 4:]):
    np.testing.assert_allclose(half.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(half.var(), 1, atol=1e-2)
