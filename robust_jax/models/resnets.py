"""Pre-activation ResNets: PreAct ResNet-18 (He et al. 2016) and WideResNet (Zagoruyko & Komodakis).

Both take `x: f32[B,H,W,C]` in [0,1] and return logits `f32[B,num_classes]`, for 32x32 (CIFAR) and
28x28 (MNIST-shaped) inputs alike: the final pool is a global average over whatever spatial size
remains. BatchNorm statistics live in the `batch_stats` collection:

    model = WideResNet(depth=28, width=10, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD)
    variables = model.init(jax.random.key(0), x, train=False)
    logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    logits = model.apply(variables, x, train=False)

Init: convs (no bias) He/Kaiming normal with fan_out, as torchvision's and TRADES' ResNets; BN
scale 1, bias 0; the classifier LeCun normal with zero bias.
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
from flax import linen as nn

from robust_jax.models import common


ACTIVATIONS = {'relu': nn.relu, 'swish': nn.silu}


def _conv(features, kernel, strides, dtype, fast, name=None, same_padding=False):
  """Bias-free conv with torch-style symmetric padding (k // 2 each side).

  same_padding: TensorFlow's 'SAME' instead, which for a 3x3 stride-2 conv on an even size pads
  one row/column at the end only (DeepMind's WideResNet pads so in PyTorch too).
  """
  pad = kernel // 2
  pads = ((pad, pad), (pad, pad))
  if same_padding and strides == 2 and kernel == 3:
    pads = ((0, 1), (0, 1))
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=pads, use_bias=False,
                 kernel_init=common.conv_init, dtype=dtype, name=name,
                 conv_general_dilated=common.conv_fn(fast))


class PreActBlock(nn.Module):
  """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut (1x1 conv of the pre-activated input when
  the stride or channel count changes, otherwise the identity on the raw input).

  This is both Wong et al.'s PreActBlock and WideResNet's BasicBlock (without dropout).
  """
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  fast_ops: bool = True
  activation: str = 'relu'     # 'swish': DeepMind's WideResNet
  same_padding: bool = False   # True: TF 'SAME' for the stride-2 conv, as DeepMind's

  @nn.compact
  def __call__(self, x, train: bool):
    """x: [B,H,W,C_in] -> [B,H/strides,W/strides,features]."""
    act = ACTIVATIONS[self.activation]
    out = act(common.batch_norm(train, self.dtype, name='bn1')(x))
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = _conv(self.features, 1, self.strides, self.dtype, self.fast_ops,
                       name='shortcut')(out)
    else:
      shortcut = x
    out = _conv(self.features, 3, self.strides, self.dtype, self.fast_ops, name='conv1',
                same_padding=self.same_padding)(out)
    out = act(common.batch_norm(train, self.dtype, name='bn2')(out))
    out = _conv(self.features, 3, 1, self.dtype, self.fast_ops, name='conv2')(out)
    return out + shortcut


class _PreActNet(nn.Module):
  """Stem conv3x3, pre-activation stages, final BN-ReLU, global average pool, Dense."""
  num_classes: int = 10
  mean: Sequence[float] = (0.0,)
  std: Sequence[float] = (1.0,)
  dtype: Any = jnp.float32
  fast_ops: bool = True   # robust_jax.models.fast_ops convolutions (same params, faster attacks)

  has_batch_norm: ClassVar[bool] = True
  has_dropout: ClassVar[bool] = False
  activation: ClassVar[str] = 'relu'
  same_padding: ClassVar[bool] = False

  def stages(self):
    """Returns (stem_features, ((features, strides, num_blocks), ...))."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x, train: bool):
    """x: f32[B,H,W,C] in [0,1] -> logits f32[B,num_classes]; `train` selects BN batch stats."""
    stem, stages = self.stages()
    x = common.normalize(x, self.mean, self.std, self.dtype)
    x = _conv(stem, 3, 1, self.dtype, self.fast_ops, name='stem')(x)
    for i, (features, strides, num_blocks) in enumerate(stages):
      for j in range(num_blocks):
        x = PreActBlock(features, strides if j == 0 else 1, self.dtype, self.fast_ops,
                        self.activation, self.same_padding,
                        name=f'stage{i + 1}_block{j + 1}')(x, train)
    x = ACTIVATIONS[self.activation](common.batch_norm(train, self.dtype, name='bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=common.logits_init, dtype=self.dtype,
                 name='logits')(x)
    return jnp.asarray(x, jnp.float32)


class PreActResNet18(_PreActNet):
  """PreAct ResNet-18 (He et al. 2016) as used by Wong et al. 2020 and Rice et al. 2020.

  Stem conv3x3-64, stages of 2 blocks with 64, 128, 256, 512 channels and strides 1, 2, 2, 2;
  11.17M parameters for 10 classes. `base_width` scales every layer: 16 is the quarter-width
  model (0.70M parameters), 64 the published one.
  """
  base_width: int = 64

  def stages(self):
    w = self.base_width
    if not isinstance(w, int) or w < 1:
      raise ValueError(f'PreActResNet18 base_width must be a positive integer; got {w!r}.')
    return w, ((w, 1, 2), (2 * w, 2, 2), (4 * w, 2, 2), (8 * w, 2, 2))


class WideResNet(_PreActNet):
  """WRN-depth-width (Zagoruyko & Komodakis 2016), as in Madry et al. and TRADES.

  depth = 6n + 4: n blocks in each of 3 stages with 16*width, 32*width, 64*width channels and
  strides 1, 2, 2, after a conv3x3-16 stem. E.g. WRN-28-10 (n=4, 36.5M parameters), WRN-34-10
  (n=5, 46.2M), WRN-70-16 (n=11, 266.8M) for 10 classes.
  """
  depth: int = 28
  width: int = 10

  def stages(self):
    n = num_blocks(self.depth)
    if not isinstance(self.width, int) or self.width < 1:
      raise ValueError(f'WideResNet width must be a positive integer; got width={self.width!r}.')
    return 16, ((16 * self.width, 1, n), (32 * self.width, 2, n), (64 * self.width, 2, n))


class DMWideResNet(WideResNet):
  """DeepMind's WideResNet (Gowal et al. 2020/2021, Rebuffi et al. 2021, Wang et al. 2023).

  The WideResNet above with Swish (SiLU) activations (`activation`, 'swish' by default) and TF
  'SAME' padding in the stride-2 convolutions (one row and column at the end, not one each side):
  the models of RobustBench's leaderboard from those papers, e.g. WRN-28-10 and WRN-70-16.
  """
  activation: str = 'swish'
  same_padding: ClassVar[bool] = True


def num_blocks(depth: int) -> int:
  """Blocks per stage n for a WideResNet of depth 6n + 4; ValueError for any other depth."""
  if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
    raise ValueError(f'WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ..., 70); '
                     f'got depth={depth!r}.')
  return (depth - 4) // 6
