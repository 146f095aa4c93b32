"""Small CNNs for MNIST-like data: Wong et al. 2020, Madry et al. 2018, TRADES (Zhang et al. 2019).

All take `x: f32[B,H,W,C]` in [0,1] and return logits `f32[B,num_classes]`; they also run on
32x32x3 inputs (the flattened size follows the input). Usage:

    model = SmallCNN(num_classes=10, mean=(0.1307,), std=(0.3081,))
    variables = model.init(jax.random.key(0), x, train=False)
    logits = model.apply(variables, x, train=False)

Convs use He-normal fan_out init (`common.conv_init`), hidden Dense layers He-normal fan_in, the
classifier LeCun normal; all biases start at zero.
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
from flax import linen as nn

from robust_jax.models import common
from robust_jax.models import fast_ops


class _Base(nn.Module):
  """Attributes shared by the CNNs (documented on each subclass)."""
  num_classes: int = 10
  mean: Sequence[float] = (0.0,)
  std: Sequence[float] = (1.0,)
  dtype: Any = jnp.float32
  fast_ops: bool = True

  has_batch_norm: ClassVar[bool] = False
  has_dropout: ClassVar[bool] = False
  # Dense layers through `fast_ops.dot_general` (with fast_ops): where XLA:CPU's matmul rounds
  # differently in small batches, which would keep the evaluation's short subsets at 64 rows.
  small_batch_dense: ClassVar[bool] = False

  def _conv(self, features, kernel, strides=1, padding='VALID', name=None):
    return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding=padding,
                   kernel_init=common.conv_init, dtype=self.dtype, name=name,
                   conv_general_dilated=common.conv_fn(self.fast_ops))

  def _dense(self, features, name=None, final=False):
    init = common.logits_init if final else common.dense_relu_init
    return nn.Dense(features, kernel_init=init, dtype=self.dtype, name=name,
                    dot_general=common.dot_fn(self.fast_ops and self.small_batch_dense))

  def _logits(self, x):
    """Flattens f[B,h,w,c] -> f32[B,num_classes] through the final Dense."""
    return jnp.asarray(self._dense(self.num_classes, name='logits', final=True)(x), jnp.float32)

  def _max_pool(self, x):
    """2x2 max-pooling, stride 2: f[B,H,W,C] -> f[B,H//2,W//2,C]."""
    return fast_ops.max_pool(x, 2) if self.fast_ops else nn.max_pool(x, (2, 2), strides=(2, 2))


def _flatten(x):
  return x.reshape((x.shape[0], -1))


class SmallCNN(_Base):
  """Wong, Rice & Kolter 2020 ("Fast is better than free") MNIST net.

  Conv(16, 4x4, s2, p1) ReLU, Conv(32, 4x4, s2, p1) ReLU, flatten, Dense(100) ReLU, Dense(K).
  28x28 input -> 7x7x32 before the flatten.
  """

  # Its Dense(1568 -> 100) rounds differently below 51 rows on XLA:CPU (fast_ops.rows_floor_dot).
  small_batch_dense: ClassVar[bool] = True

  @nn.compact
  def __call__(self, x, train: bool):
    """x: f32[B,H,W,C] in [0,1] -> logits f32[B,num_classes]. `train` is unused (no BN/dropout)."""
    del train
    x = common.normalize(x, self.mean, self.std, self.dtype)
    pad = ((1, 1), (1, 1))
    x = nn.relu(self._conv(16, 4, strides=2, padding=pad)(x))
    x = nn.relu(self._conv(32, 4, strides=2, padding=pad)(x))
    x = nn.relu(self._dense(100)(_flatten(x)))
    return self._logits(x)


class MadryCNN(_Base):
  """Madry et al. 2018 mnist_challenge net.

  Conv(32, 5x5, SAME) ReLU, maxpool 2, Conv(64, 5x5, SAME) ReLU, maxpool 2, flatten,
  Dense(1024) ReLU, Dense(K). 28x28 input -> 7x7x64 before the flatten.
  """

  @nn.compact
  def __call__(self, x, train: bool):
    """x: f32[B,H,W,C] in [0,1] -> logits f32[B,num_classes]. `train` is unused (no BN/dropout)."""
    del train
    x = common.normalize(x, self.mean, self.std, self.dtype)
    x = self._max_pool(nn.relu(self._conv(32, 5, padding='SAME')(x)))
    x = self._max_pool(nn.relu(self._conv(64, 5, padding='SAME')(x)))
    x = nn.relu(self._dense(1024)(_flatten(x)))
    return self._logits(x)


class TradesCNN(_Base):
  """TRADES (Zhang et al. 2019) SmallCNN for MNIST.

  Conv(32,3x3) ReLU, Conv(32,3x3) ReLU, maxpool 2, Conv(64,3x3) ReLU, Conv(64,3x3) ReLU, maxpool 2,
  flatten, Dense(200) ReLU, Dropout(0.5), Dense(200) ReLU, Dense(K); convs VALID. 28x28 input ->
  4x4x64 before the flatten. Dropout draws from the 'dropout' rng stream, only when `train`.
  (TRADES zero-initialises the last layer; this does not, so fresh models give non-constant logits.)
  """
  dropout_rate: float = 0.5

  has_dropout: ClassVar[bool] = True
  # Its logits changed below 24 rows on XLA:CPU without it (fast_ops.rows_floor_dot).
  small_batch_dense: ClassVar[bool] = True

  @nn.compact
  def __call__(self, x, train: bool):
    """x: f32[B,H,W,C] in [0,1] -> logits f32[B,num_classes]; needs rngs={'dropout': k} if train."""
    x = common.normalize(x, self.mean, self.std, self.dtype)
    x = nn.relu(self._conv(32, 3)(x))
    x = self._max_pool(nn.relu(self._conv(32, 3)(x)))
    x = nn.relu(self._conv(64, 3)(x))
    x = self._max_pool(nn.relu(self._conv(64, 3)(x)))
    x = nn.relu(self._dense(200)(_flatten(x)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(self._dense(200)(x))
    return self._logits(x)
