"""Image classifiers as flax.linen modules, looked up by name.

    from robust_jax import models
    model = models.build(config.model, num_classes=10, mean=(0.1307,), std=(0.3081,))
    variables = model.init(jax.random.key(0), x, train=False)      # x: f32[B,H,W,C] in [0,1]
    logits = model.apply(variables, x, train=False)                # f32[B,num_classes]

Every model normalises its input itself (`(x - mean) / std` per channel is its first op), so
attacks and epsilons work in [0,1] pixel scale. BatchNorm models keep running statistics in the
`batch_stats` collection (apply with `mutable=['batch_stats']` when `train=True`); dropout models
draw from the `'dropout'` rng stream when `train=True`.
"""

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from robust_jax.models import resnets
from robust_jax.models.cnns import MadryCNN
from robust_jax.models.cnns import SmallCNN
from robust_jax.models.cnns import TradesCNN
from robust_jax.models.resnets import DMWideResNet
from robust_jax.models.resnets import PreActResNet18
from robust_jax.models.resnets import WideResNet

MODELS = {
    'small_cnn': SmallCNN,
    'madry_cnn': MadryCNN,
    'trades_cnn': TradesCNN,
    'preact_resnet18': PreActResNet18,
    'wide_resnet': WideResNet,
    'dm_wide_resnet': DMWideResNet,
}


def _model_class(name: str):
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; valid: {sorted(MODELS)}.')
  return MODELS[name]


# config.model.dtype -> compute dtype (parameters stay float32 whatever it is).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str):
  """The compute dtype named by `config.model.dtype` ('float32' or 'bfloat16')."""
  if name not in DTYPES:
    raise ValueError(f'Unknown model dtype {name!r}; valid: {list(DTYPES)}.')
  return DTYPES[name]


def build(model_cfg: Any, *, num_classes: int, mean, std, dtype=None) -> nn.Module:
  """The model named `model_cfg.name`.

  Args:
    model_cfg: anything with attributes `name` and, for 'wide_resnet', `depth` and `width`
      (e.g. `config.model`); for 'preact_resnet18' optionally `base_width` (default 64);
      optionally `dtype` ('float32' | 'bfloat16', default 'float32'),
      `fast_ops` (default True: convolutions and pooling from `fast_ops`, whose input gradients
      compile to faster code, and for small_cnn and trades_cnn dense layers whose logits do not
      depend on the batch size; the parameters are the same either way) and `normalize` (default
      True; False ignores mean and std and feeds the [0,1] pixels as they are) and `mean`, `std`
      (non-empty: used instead of the `mean` and `std` arguments, e.g. the constants a
      checkpoint was trained with).
    num_classes: number of logits K.
    mean, std: per-channel normalisation constants for inputs in [0,1], tuples of length C.
    dtype: compute dtype, overriding `model_cfg.dtype` (parameters stay float32; logits are
      returned as float32).

  Returns:
    An unbound flax module mapping (x: f32[B,H,W,C] in [0,1], train: bool) -> f32[B,K].
  """
  cls = _model_class(model_cfg.name)
  if getattr(model_cfg, 'mean', ()) or getattr(model_cfg, 'std', ()):
    mean, std = model_cfg.mean, model_cfg.std
  if not getattr(model_cfg, 'normalize', True):  # raw [0,1] pixels, as some papers' code feeds
    mean, std = (0.0,), (1.0,)
  if dtype is None:
    dtype = compute_dtype(getattr(model_cfg, 'dtype', 'float32'))
  kwargs = dict(num_classes=int(num_classes), mean=tuple(float(m) for m in mean),
                std=tuple(float(s) for s in std), dtype=dtype,
                fast_ops=bool(getattr(model_cfg, 'fast_ops', True)))
  if issubclass(cls, WideResNet):
    resnets.num_blocks(model_cfg.depth)  # fail here, not at the first init, on a bad depth
    kwargs.update(depth=model_cfg.depth, width=model_cfg.width)
  if cls is DMWideResNet:
    kwargs.update(activation=str(getattr(model_cfg, 'activation', 'swish')))
  if cls is PreActResNet18:
    kwargs.update(base_width=int(getattr(model_cfg, 'base_width', 64)))
  return cls(**kwargs)


def has_batch_norm(name: str) -> bool:
  """Whether the named model has BatchNorm (and so a `batch_stats` collection)."""
  return _model_class(name).has_batch_norm


def has_dropout(name: str) -> bool:
  """Whether the named model uses dropout (the `'dropout'` rng stream) when training."""
  return _model_class(name).has_dropout


__all__ = ['DTYPES', 'MODELS', 'MadryCNN', 'PreActResNet18', 'SmallCNN', 'TradesCNN', 'WideResNet',
           'build', 'compute_dtype', 'has_batch_norm', 'has_dropout']
