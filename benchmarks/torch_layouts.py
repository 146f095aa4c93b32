"""PyTorch modules of the state-dict layouts that robust_jax reads and writes (torch_models.py).

Wong et al.'s PreActResNet18, the Madry/TRADES WideResNet and DeepMind's WideResNet, written in
torch: they load (`load_state_dict(strict=True)`) a RobustBench-style file, or one written by
`launch.py --mode=export` / `torch_models.save_torch`. torch is development-only
(requirements-ref.txt), so only the reference venv imports this:

    net = torch_layouts.load('model.pt', model_cfg, num_classes=10, mean=m, std=s)
    logits = net(x_nchw)   # x: f32[B,C,H,W] in [0,1]; mean/std None: no normalisation

`model_cfg` has the fields of `config.model` (`name`; `base_width` for 'preact_resnet18';
`depth`, `width` for the WideResNets; `activation` for 'dm_wide_resnet'). The input
normalisation is no part of a state dict: `mean`, `std` (plain attributes, not buffers) give it.
Used by scripts/make_torch_fixtures.py (the test fixtures), tests/test_torch_models.py and
benchmarks/agreement.py.
"""

import torch

from robust_jax.interop import torch_files


def _normalise(x, mean, std):
  if mean is None:
    return x
  mean, std = mean.to(x.device), std.to(x.device)  # plain attributes: net.to(device) skips them
  return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


class PreActBlock(torch.nn.Module):
  """BN-ReLU-conv-BN-ReLU-conv; a shortcut conv of the pre-activated input when shapes change."""

  def __init__(self, cin, cout, stride, shortcut_name):
    super().__init__()
    self.bn1 = torch.nn.BatchNorm2d(cin)
    self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn2 = torch.nn.BatchNorm2d(cout)
    self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.shortcut_name = shortcut_name
    if stride != 1 or cin != cout:
      conv = torch.nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
      # Wong et al. wrap it in a Sequential ('shortcut.0'); the WideResNet names it convShortcut.
      setattr(self, shortcut_name,
              torch.nn.Sequential(conv) if shortcut_name == 'shortcut' else conv)

  def forward(self, x):
    out = torch.relu(self.bn1(x))
    skip = getattr(self, self.shortcut_name)(out) if hasattr(self, self.shortcut_name) else x
    out = self.conv1(out)
    out = self.conv2(torch.relu(self.bn2(out)))
    return out + skip


class PreActResNet18(torch.nn.Module):
  """Wong et al.'s layout (conv1, layer1..4, bn, linear), every width scaled by base_width/64."""

  def __init__(self, base_width=64, num_classes=10, mean=None, std=None, in_channels=3):
    super().__init__()
    w = base_width
    self.mean, self.std = mean, std
    self.conv1 = torch.nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)
    cin = w
    for i, (cout, stride) in enumerate(((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2))):
      blocks = [PreActBlock(cin, cout, stride, 'shortcut'), PreActBlock(cout, cout, 1, 'shortcut')]
      setattr(self, f'layer{i + 1}', torch.nn.Sequential(*blocks))
      cin = cout
    self.bn = torch.nn.BatchNorm2d(cin)
    self.linear = torch.nn.Linear(cin, num_classes)

  def forward(self, x):
    out = self.conv1(_normalise(x, self.mean, self.std))
    for i in range(4):
      out = getattr(self, f'layer{i + 1}')(out)
    out = torch.relu(self.bn(out)).mean(dim=(2, 3))
    return self.linear(out)


class _Stage(torch.nn.Module):

  def __init__(self, cin, cout, stride, n):
    super().__init__()
    self.layer = torch.nn.Sequential(*[
        PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, 'convShortcut')
        for i in range(n)])

  def forward(self, x):
    return self.layer(x)


class WideResNet(torch.nn.Module):
  """The Madry/TRADES layout (conv1, block1..3.layer.i, bn1, fc); `sub_block1`: TRADES' unused
  copy of block1, which its files hold (robust_jax's exports hold it only when asked)."""

  def __init__(self, depth=10, width=1, num_classes=10, mean=None, std=None, in_channels=3,
               sub_block1=True):
    super().__init__()
    n = (depth - 4) // 6
    c = (16, 16 * width, 32 * width, 64 * width)
    self.mean, self.std = mean, std
    self.conv1 = torch.nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False)
    self.block1 = _Stage(c[0], c[1], 1, n)
    if sub_block1:
      self.sub_block1 = _Stage(c[0], c[1], 1, n)  # in TRADES' module too; forward never calls it
    self.block2 = _Stage(c[1], c[2], 2, n)
    self.block3 = _Stage(c[2], c[3], 2, n)
    self.bn1 = torch.nn.BatchNorm2d(c[3])
    self.fc = torch.nn.Linear(c[3], num_classes)

  def forward(self, x):
    out = self.block3(self.block2(self.block1(self.conv1(_normalise(x, self.mean, self.std)))))
    return self.fc(torch.relu(self.bn1(out)).mean(dim=(2, 3)))


class DMBlock(torch.nn.Module):
  """DeepMind's WideResNet block: TF-'SAME' padding by hand before conv_0 (end-only at stride 2)."""

  def __init__(self, cin, cout, stride, act):
    super().__init__()
    self.batchnorm_0 = torch.nn.BatchNorm2d(cin, momentum=0.01)
    self.relu_0 = act()
    self.conv_0 = torch.nn.Conv2d(cin, cout, 3, stride, 0, bias=False)
    self.batchnorm_1 = torch.nn.BatchNorm2d(cout, momentum=0.01)
    self.relu_1 = act()
    self.conv_1 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.has_shortcut = cin != cout
    self.shortcut = (torch.nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if self.has_shortcut
                     else None)
    self.stride = stride

  def forward(self, x):
    pre = self.relu_0(self.batchnorm_0(x))
    pad = (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1)
    out = self.conv_0(torch.nn.functional.pad(pre, pad))
    out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
    return out + (self.shortcut(pre) if self.has_shortcut else x)


class DMGroup(torch.nn.Module):

  def __init__(self, n, cin, cout, stride, act):
    super().__init__()
    self.block = torch.nn.Sequential(*[
        DMBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, act) for i in range(n)])

  def forward(self, x):
    return self.block(x)


class DMWideResNet(torch.nn.Module):
  """DeepMind's layout (init_conv, layer.g.block.i, batchnorm, logits); mean/std not stored."""

  def __init__(self, depth=10, width=1, activation='swish', num_classes=10, mean=None, std=None,
               in_channels=3):
    super().__init__()
    act = {'swish': torch.nn.SiLU, 'relu': torch.nn.ReLU}[activation]
    n = (depth - 4) // 6
    c = (16, 16 * width, 32 * width, 64 * width)
    self.mean, self.std = mean, std   # plain attributes: not in the state dict
    self.init_conv = torch.nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False)
    self.layer = torch.nn.Sequential(DMGroup(n, c[0], c[1], 1, act), DMGroup(n, c[1], c[2], 2, act),
                                     DMGroup(n, c[2], c[3], 2, act))
    self.batchnorm = torch.nn.BatchNorm2d(c[3], momentum=0.01)
    self.relu = act()
    self.logits = torch.nn.Linear(c[3], num_classes)

  def forward(self, x):
    out = self.relu(self.batchnorm(self.layer(self.init_conv(_normalise(x, self.mean, self.std)))))
    return self.logits(out.mean(dim=(2, 3)))


LAYOUTS = ('preact_resnet18', 'wide_resnet', 'dm_wide_resnet')


def build(model_cfg, *, num_classes=10, mean=None, std=None, in_channels=3, sub_block1=False):
  """The module of `model_cfg` (fields as `config.model`); mean/std: sequences, or None."""
  name = model_cfg.name
  if name not in LAYOUTS:
    raise ValueError(f'model {name!r} has no PyTorch layout; layouts: {list(LAYOUTS)}.')
  if mean is not None:
    mean = torch.tensor(mean, dtype=torch.float32)
    std = torch.tensor(std, dtype=torch.float32)
  common = dict(num_classes=num_classes, mean=mean, std=std, in_channels=in_channels)
  if name == 'preact_resnet18':
    return PreActResNet18(getattr(model_cfg, 'base_width', 64), **common)
  if name == 'wide_resnet':
    return WideResNet(model_cfg.depth, model_cfg.width, sub_block1=sub_block1, **common)
  return DMWideResNet(model_cfg.depth, model_cfg.width, getattr(model_cfg, 'activation', 'swish'),
                      **common)


def state_dict(path):
  """{name: tensor} of a `.pt`/`.pth`/`.bin` file, read by torch itself (`weights_only`): the
  whole file, or the dict under one of torch_files.STATE_DICT_KEYS, without DataParallel's
  'module.' prefix."""
  obj = torch.load(path, map_location='cpu', weights_only=True)
  for key in torch_files.STATE_DICT_KEYS:
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if all(k.startswith('module.') for k in obj):
    obj = {k[len('module.'):]: v for k, v in obj.items()}
  return obj


def load(path, model_cfg, *, num_classes=10, mean=None, std=None, in_channels=3):
  """The module of `model_cfg` holding the weights of `path` (strictly: every key used and
  present), in eval mode."""
  weights = state_dict(path)
  net = build(model_cfg, num_classes=num_classes, mean=mean, std=std, in_channels=in_channels,
              sub_block1=any(k.startswith('sub_block1.') for k in weights))
  net.load_state_dict(weights, strict=True)
  return net.eval()
