"""PyTorch ports of robust_jax's small_cnn, madry_cnn and preact_resnet18, weights copied from flax.

Layer for layer the same shapes, strides and paddings as robust_jax/models (Wong et al. 2020's
small CNN, Madry et al. 2018's MNIST CNN, He et al. 2016's PreAct ResNet-18), in PyTorch's NCHW
layout, so that a side-by-side benchmark compares frameworks, not architectures:

    net = torch_ports.port('madry_cnn', variables, image_shape=(28, 28, 1), mean=m, std=s)
    logits = net(x_nchw)     # equal to model.apply(variables, x_nhwc, train=False)

Conv kernels go [kh,kw,in,out] -> [out,in,kh,kw] and Dense kernels [in,out] -> [out,in]. flax
flattens NHWC in (h,w,c) order and torch NCHW in (c,h,w) order, so the rows of the first Dense
after a flatten are permuted (as benchmarks/agreement.py does for small_cnn). BatchNorm runs with
its running statistics (eval mode), eps 1e-5, as robust_jax's attacks see the model.
"""

import numpy as np
import torch
from torch import nn

PORTED = ('small_cnn', 'madry_cnn', 'preact_resnet18')


class _Normalize(nn.Module):

  def __init__(self, mean, std):
    super().__init__()
    self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
    self.register_buffer('std', torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

  def forward(self, x):
    return (x - self.mean) / self.std


class SmallCNN(nn.Module):
  """Conv(16,4,s2,p1) ReLU Conv(32,4,s2,p1) ReLU flatten Dense(100) ReLU Dense(K)."""

  def __init__(self, channels, flat, num_classes, mean, std):
    super().__init__()
    self.norm = _Normalize(mean, std)
    self.Conv_0 = nn.Conv2d(channels, 16, 4, stride=2, padding=1)
    self.Conv_1 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
    self.Dense_0 = nn.Linear(flat, 100)
    self.logits = nn.Linear(100, num_classes)

  def forward(self, x):
    x = torch.relu(self.Conv_1(torch.relu(self.Conv_0(self.norm(x)))))
    return self.logits(torch.relu(self.Dense_0(torch.flatten(x, 1))))


class MadryCNN(nn.Module):
  """Conv(32,5,SAME) ReLU pool2 Conv(64,5,SAME) ReLU pool2 flatten Dense(1024) ReLU Dense(K)."""

  def __init__(self, channels, flat, num_classes, mean, std):
    super().__init__()
    self.norm = _Normalize(mean, std)
    self.Conv_0 = nn.Conv2d(channels, 32, 5, padding=2)
    self.Conv_1 = nn.Conv2d(32, 64, 5, padding=2)
    self.Dense_0 = nn.Linear(flat, 1024)
    self.logits = nn.Linear(1024, num_classes)

  def forward(self, x):
    x = torch.max_pool2d(torch.relu(self.Conv_0(self.norm(x))), 2)
    x = torch.max_pool2d(torch.relu(self.Conv_1(x)), 2)
    return self.logits(torch.relu(self.Dense_0(torch.flatten(x, 1))))


class PreActBlock(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
    self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
    self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                     if stride != 1 or cin != cout else None)

  def forward(self, x):
    out = torch.relu(self.bn1(x))
    shortcut = self.shortcut(out) if self.shortcut is not None else x
    out = self.conv1(out)
    return self.conv2(torch.relu(self.bn2(out))) + shortcut


class PreActResNet18(nn.Module):
  """Stem conv3x3-64, 4 stages x 2 PreActBlocks (64, 128, 256, 512), BN-ReLU, avg pool, Dense."""

  def __init__(self, channels, num_classes, mean, std):
    super().__init__()
    self.norm = _Normalize(mean, std)
    self.stem = nn.Conv2d(channels, 64, 3, padding=1, bias=False)
    blocks, cin = {}, 64
    for i, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
      for j in range(2):
        blocks[f'stage{i + 1}_block{j + 1}'] = PreActBlock(cin, cout, stride if j == 0 else 1)
        cin = cout
    self.blocks = nn.ModuleDict(blocks)
    self.bn = nn.BatchNorm2d(512, eps=1e-5)
    self.logits = nn.Linear(512, num_classes)

  def forward(self, x):
    x = self.stem(self.norm(x))
    for block in self.blocks.values():
      x = block(x)
    return self.logits(torch.relu(self.bn(x)).mean(dim=(2, 3)))


def _conv_w(k):
  return k.transpose(3, 2, 0, 1)


def _flat_dense_w(k, spatial, channels):
  """A flax Dense kernel [(h,w,c), out] after an NHWC flatten -> torch weight [out, (c,h,w)]."""
  h, w = spatial
  k = k.reshape(h, w, channels, -1).transpose(3, 2, 0, 1)
  return k.reshape(k.shape[0], -1)


def _state(params, stats, flat_dense=None):
  """torch state dict from flax params (and batch_stats), by the flax module names."""
  out = {}
  for path, leaf in _flatten(params).items():
    mod, name = '.'.join(path[:-1]), path[-1]
    mod = mod.replace('stage', 'blocks.stage', 1) if mod.startswith('stage') else mod
    if name == 'kernel' and leaf.ndim == 4:
      out[f'{mod}.weight'] = _conv_w(leaf)
    elif name == 'kernel' and flat_dense and path[-2] == flat_dense[0]:
      out[f'{mod}.weight'] = _flat_dense_w(leaf, *flat_dense[1:])
    elif name == 'kernel':
      out[f'{mod}.weight'] = leaf.T
    elif name == 'scale':
      out[f'{mod}.weight'] = leaf
    else:
      out[f'{mod}.{name}'] = leaf
  for path, leaf in _flatten(stats).items():
    mod = '.'.join(path[:-1])
    mod = mod.replace('stage', 'blocks.stage', 1) if mod.startswith('stage') else mod
    out[f'{mod}.running_{path[-1]}'] = leaf
  return {k: torch.tensor(np.array(v, np.float32)) for k, v in out.items()}


def _flatten(tree, prefix=()):
  out = {}
  for k, v in (tree or {}).items():
    if isinstance(v, dict) or hasattr(v, 'items'):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = np.asarray(v)
  return out


def port(name, variables, image_shape, mean, std):
  """The torch twin (eval mode, on the CPU) of robust_jax model `name` with flax `variables`."""
  if name not in PORTED:
    raise ValueError(f'No torch port of {name!r}; ported: {list(PORTED)}.')
  params, stats = variables['params'], variables.get('batch_stats', {})
  h, w, c = image_shape
  k = params['logits']['kernel'].shape[-1]
  if name == 'small_cnn':
    s = (h // 4, w // 4)
    net, flat = SmallCNN(c, s[0] * s[1] * 32, k, mean, std), ('Dense_0', s, 32)
  elif name == 'madry_cnn':
    s = (h // 4, w // 4)
    net, flat = MadryCNN(c, s[0] * s[1] * 64, k, mean, std), ('Dense_0', s, 64)
  else:
    net, flat = PreActResNet18(c, k, mean, std), None
  state = _state(params, stats, flat)
  own = net.state_dict()
  missing = sorted(set(own) - set(state) - {'norm.mean', 'norm.std'}
                   - {n for n in own if n.endswith('num_batches_tracked')})
  extra = sorted(set(state) - set(own))
  if missing or extra:
    raise ValueError(f'flax and torch {name} differ: torch-only {missing[:5]}, flax-only '
                     f'{extra[:5]}.')
  for n, t in state.items():
    if tuple(own[n].shape) != tuple(t.shape):
      raise ValueError(f'{name}: {n} has shape {tuple(t.shape)} in flax, {tuple(own[n].shape)} '
                       'in torch.')
  net.load_state_dict({**own, **state})
  return net.eval()
