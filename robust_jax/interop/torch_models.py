"""PyTorch state dicts as robust_jax models: RobustBench-style CIFAR checkpoints evaluated in JAX.

    logits_fn = torch_models.torch_logits_fn('Wong2020Fast.pt', model_cfg)
    logits = logits_fn(x)            # x: f32[B,32,32,3] in [0,1] -> f32[B,num_classes]

`model_cfg` has the fields of `config.model` (`name`, and `depth`/`width` for 'wide_resnet',
`base_width` for 'preact_resnet18'). The logits are what the PyTorch module computes on the same
input, in inference mode (BatchNorm running statistics): no normalisation is added that the module
does not have. A module that normalises its input itself (its first op is (x - mean) / std) is
described by `mean` and `std`.

Names of the PyTorch modules whose state dicts are read (other codebases that use the same names
load too):
- 'preact_resnet18': the PreAct ResNet-18 of Wong et al. 2020 and Rice et al. 2020 (conv1,
  layer1..4.{0,1}.{bn1,conv1,bn2,conv2,shortcut.0}, bn, linear);
- 'wide_resnet': the WideResNet of Madry et al. / TRADES / Carmon et al. (conv1,
  block1..3.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc). TRADES' module also holds an
  unused `sub_block1` that its forward pass never calls; its weights are skipped.
- 'dm_wide_resnet' (`activation` 'swish' or 'relu'): DeepMind's WideResNet of Gowal et al.
  2020/2021, Rebuffi et al. 2021, Wang et al. 2023 (init_conv, layer.{0,1,2}.block.{i}.
  {batchnorm_0,conv_0,batchnorm_1,conv_1,shortcut}, batchnorm, logits). Its modules normalise
  with CIFAR-10's mean and std, which their state dicts do not store: pass them as mean/std.

Weights that do not fit are one error listing every missing, unexpected and mis-shaped key.
"""

import re

import jax
import numpy as np
from flax import traverse_util

from robust_jax import errors
from robust_jax import models
from robust_jax.interop import torch_files

# BatchNorm: flax (collection, leaf) -> torch suffix.
_BN = {('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
       ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}
# Torch buffers that flax models do not have.
_IGNORED = re.compile(r'(^|\.)num_batches_tracked$|^sub_block1\.')


# Per PyTorch layout: the name of block `b` (from 0) of stage `s` (from 1), the names of a
# block's modules where they differ from ours (bn1, conv1, bn2, conv2, shortcut), and the names of
# the stem, the final BatchNorm and the classifier.
MODULE_NAMES = {
    # Wong et al.'s PreActResNet18.
    'preact_resnet18': (lambda s, b: f'layer{s}.{b}', {'shortcut': 'shortcut.0'},
                        {'stem': 'conv1', 'bn': 'bn', 'logits': 'linear'}),
    # The Madry/TRADES WideResNet.
    'wide_resnet': (lambda s, b: f'block{s}.layer.{b}', {'shortcut': 'convShortcut'},
                    {'stem': 'conv1', 'bn': 'bn1', 'logits': 'fc'}),
    # DeepMind's WideResNet.
    'dm_wide_resnet': (lambda s, b: f'layer.{s - 1}.block.{b}',
                       {'bn1': 'batchnorm_0', 'conv1': 'conv_0', 'bn2': 'batchnorm_1',
                        'conv2': 'conv_1'},
                       {'stem': 'init_conv', 'bn': 'batchnorm', 'logits': 'logits'}),
}


def _torch_module(name, path):
  """Flax module path (tuple) -> the torch module name in layout `name`."""
  block, inner, heads = MODULE_NAMES[name]
  m = re.fullmatch(r'stage(\d+)_block(\d+)', path[0])
  if m:
    return f'{block(int(m[1]), int(m[2]) - 1)}.{inner.get(path[1], path[1])}'
  return heads[path[0]]


def _torch_key(name, collection, path):
  """The torch state-dict key of flax leaf `collection/path`, and how to lay its value out."""
  module = _torch_module(name, path[:-1])
  leaf = path[-1]
  if leaf == 'kernel':
    return f'{module}.weight', 'kernel'
  if (collection, leaf) in _BN:
    return f'{module}.{_BN[(collection, leaf)]}', 'same'
  if leaf == 'bias':
    return f'{module}.bias', 'same'
  raise ValueError(f'no torch name for {collection}/{"/".join(path)}')


def _to_flax(value, layout, want_shape):
  if layout == 'kernel':
    if value.ndim == 4:      # conv: torch [out, in, kh, kw] -> flax [kh, kw, in, out]
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:    # linear: torch [out, in] -> flax [in, out]
      value = value.T
  return value if value.shape == tuple(want_shape) else None


def convert(weights, model_cfg, *, num_classes=10, mean=(0.0,), std=(1.0,), image_shape=(32, 32, 3),
            source='the state dict'):
  """(flax module, variables) holding the torch `weights` ({key: np.ndarray})."""
  if model_cfg.name not in MODULE_NAMES:
    raise errors.ConfigError(f'model.name={model_cfg.name!r} has no PyTorch layout here; loadable: '
                     f'{sorted(MODULE_NAMES)}')
  model = models.build(model_cfg, num_classes=num_classes, mean=mean, std=std)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             np.zeros((1,) + tuple(image_shape), np.float32),
                                             train=False))
  flat = {k: v.shape for k, v in traverse_util.flatten_dict(dict(shapes)).items()}
  used, missing, misshaped, out = set(), [], [], {}
  for (collection, *path), want in flat.items():
    key, layout = _torch_key(model_cfg.name, collection, tuple(path))
    if key not in weights:
      missing.append(key)
      continue
    used.add(key)
    value = _to_flax(np.asarray(weights[key], np.float32), layout, want)
    if value is None:
      misshaped.append((key, f'{key}: {tuple(np.shape(weights[key]))} in the file, the model '
                             f'needs {_torch_shape(want, layout)}'))
      continue
    out[(collection, *path)] = value
  unexpected = [k for k in weights if k not in used and not _IGNORED.search(k)]
  order = {k: i for i, k in enumerate(weights)}  # the file's order
  misshaped = [text for _, text in sorted(misshaped, key=lambda kt: order[kt[0]])]
  if missing or unexpected or misshaped:
    lines = [f'{source} does not fit {_describe(model_cfg)} with {num_classes} classes:']
    for what, keys in (('missing', sorted(missing)), ('unexpected', unexpected),
                       ('mis-shaped', misshaped)):
      if keys:
        lines.append(f'  {len(keys)} {what}: ' + ', '.join(keys[:12]) +
                     (f', ... ({len(keys) - 12} more)' if len(keys) > 12 else ''))
    lines.append('  (set --config.model.name/depth/width/base_width to the architecture the file '
                 'was saved from)')
    raise errors.ConfigError('\n'.join(lines))
  return model, traverse_util.unflatten_dict(out)


def _torch_shape(shape, layout):
  if layout == 'kernel' and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if layout == 'kernel' and len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


# The config.model fields (beyond `name`) that fix each layout's shapes and function.
ARCHITECTURE_FIELDS = {'preact_resnet18': {'base_width': 64},
                       'wide_resnet': {'depth': None, 'width': None},
                       'dm_wide_resnet': {'depth': None, 'width': None, 'activation': 'swish'}}


def architecture(model_cfg):
  """{'name': ..., field: value}: the config.model fields that define the PyTorch module of
  `model_cfg`; ConfigError when its model has no PyTorch layout."""
  if model_cfg.name not in MODULE_NAMES:
    raise errors.ConfigError(f'model.name={model_cfg.name!r} has no PyTorch layout here; '
                             f'exportable: {sorted(MODULE_NAMES)}')
  return {'name': model_cfg.name, **{k: getattr(model_cfg, k, default) for k, default in
                                     ARCHITECTURE_FIELDS[model_cfg.name].items()}}


def _describe(model_cfg):
  if model_cfg.name not in MODULE_NAMES:
    return model_cfg.name
  return ' '.join(f'{k}={v}' if k != 'name' else v for k, v in architecture(model_cfg).items())


def torch_logits_fn(path, model_cfg, *, num_classes=10, mean=(0.0,), std=(1.0,),
                    image_shape=(32, 32, 3)):
  """A jitted images -> logits function (inference mode) computing the checkpoint's model."""
  weights = torch_files.load_state_dict(path)
  model, variables = convert(weights, model_cfg, num_classes=num_classes, mean=mean, std=std,
                             image_shape=image_shape, source=str(path))

  @jax.jit
  def logits_fn(x):
    return model.apply(variables, x, train=False)

  return logits_fn


def _from_flax(value, layout):
  if layout == 'kernel':
    if value.ndim == 4:      # flax [kh, kw, in, out] -> torch [out, in, kh, kw]
      return value.transpose(3, 2, 0, 1)
    if value.ndim == 2:
      return value.T
  return value


def to_torch_state_dict(model_cfg, variables, *, trades_sub_block=False):
  """The PyTorch state dict ({key: np.ndarray}) of robust_jax `variables` of `model_cfg`'s model.

  It loads with `load_state_dict(strict=True)` into a module with the layout named in this file's
  docstring; `trades_sub_block=True` adds TRADES' unused `sub_block1` (a copy of block1) that its
  WideResNet module expects.
  """
  if model_cfg.name not in MODULE_NAMES:
    raise ValueError(f'model.name={model_cfg.name!r} has no PyTorch layout here; exportable: '
                     f'{sorted(MODULE_NAMES)}')
  out = {}
  for (collection, *path), value in traverse_util.flatten_dict(
      {k: dict(v) for k, v in variables.items() if k in ('params', 'batch_stats')}).items():
    key, layout = _torch_key(model_cfg.name, collection, tuple(path))
    out[key] = np.asarray(_from_flax(np.asarray(value, np.float32), layout))
    if collection == 'batch_stats' and path[-1] == 'mean':
      out[key.rsplit('.', 1)[0] + '.num_batches_tracked'] = np.array(0, np.int64)
  if trades_sub_block and model_cfg.name == 'wide_resnet':
    out.update({'sub_block1.' + k[len('block1.'):]: v for k, v in out.items()
                if k.startswith('block1.')})
  return dict(sorted(out.items(), key=lambda kv: _torch_order(kv[0])))


_LEAF_ORDER = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


def _torch_order(key):
  """Stem first, stages and blocks in order, head last; a module's tensors in torch's order."""
  module, leaf = key.rsplit('.', 1)
  head = module.split('.')[0]
  rank = (0 if head in ('conv1', 'init_conv') else
          2 if head in ('bn', 'bn1', 'linear', 'fc', 'batchnorm', 'logits') else 1)
  parts = [p.zfill(6) if p.isdigit() else p for p in re.split(r'(\d+)', module)]
  return rank, parts, _LEAF_ORDER.index(leaf)


def save_torch(path, model_cfg, variables, **kwargs):
  """Writes the model as a PyTorch state dict file (`torch.load(path)` reads it; no torch here)."""
  torch_files.save_state_dict(path, to_torch_state_dict(model_cfg, variables, **kwargs))
