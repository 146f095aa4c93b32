"""Pieces shared by the model families: input normalisation and weight initialisers."""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from robust_jax.models import fast_ops

# He/Kaiming normal, fan_out, untruncated: torch's `kaiming_normal_(mode='fan_out')`, the conv init
# of the reference ResNets (and of TRADES' WideResNet, whose std is sqrt(2 / (k*k*out_channels))).
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# He/Kaiming normal, fan_in, untruncated, for Dense layers followed by a ReLU.
dense_relu_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
# LeCun normal (flax's default) for the final, linear classifier layer.
logits_init = nn.initializers.lecun_normal()


def normalize(x, mean: Sequence[float], std: Sequence[float], dtype=jnp.float32):
  """`(x - mean) / std` per channel, computed in float32, then cast to the compute dtype.

  Args:
    x: f32[B,H,W,C] in [0,1] pixel scale.
    mean, std: per-channel tuples of length C (or length 1, broadcast to every channel).
    dtype: compute dtype of the result.

  Returns:
    `dtype[B,H,W,C]`, roughly zero-mean unit-variance.

  Raises:
    ValueError: if mean or std has neither 1 nor C entries (broadcasting a 3-channel mean over
      a 1-channel image would silently triple the channels).
  """
  channels = x.shape[-1]
  for label, value in (('mean', mean), ('std', std)):
    if len(value) not in (1, channels):
      raise ValueError(f'{label}={tuple(value)} has {len(value)} entries; inputs have {channels} '
                       f'channels (x: {tuple(x.shape)}), so it needs 1 or {channels}.')
  x = jnp.asarray(x, jnp.float32)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((x - mean) / std).astype(dtype)


def batch_norm(train: bool, dtype, name=None):
  """BatchNorm as every model here uses it (PyTorch's momentum 0.1, eps 1e-5), in `batch_stats`."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


def conv_fn(fast: bool):
  """The `conv_general_dilated` for `nn.Conv`: `fast_ops`' (fast input gradients) or lax's (None).

  Either way the parameters (names, shapes, init) are those of `nn.Conv`.
  """
  return fast_ops.conv_general_dilated if fast else None


def dot_fn(fast: bool):
  """The `dot_general` for `nn.Dense`: `fast_ops`' (the same logits in any batch size) or lax's.

  Either way the parameters (names, shapes, init) are those of `nn.Dense`.
  """
  return fast_ops.dot_general if fast else None
