"""Writes tests/fixtures/torch/: small checkpoints saved by torch itself, and their values.

Run with the reference venv (requirements-ref.txt), the only one that has torch:

    .venv-ref/bin/python scripts/make_torch_fixtures.py

The tests read these files with robust_jax.interop (no torch) and compare with `expected.npz`,
written here by torch's own `.numpy()`. The files are small and committed, so CI checks the reader
without torch.
"""

import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests',
                   'fixtures', 'torch')


def tensors():
  """Every storage dtype, a scalar, an empty tensor, and views that share one storage."""
  g = torch.Generator().manual_seed(0)
  base = torch.randn(3, 4, generator=g)
  out = {
      'f32': torch.randn(2, 3, 4, generator=g),
      'f64': torch.randn(5, generator=g, dtype=torch.float64),
      'f16': torch.randn(3, generator=g).half(),
      'bf16': torch.randn(3, generator=g).bfloat16(),
      'i64': torch.arange(-3, 4),
      'i32': torch.arange(5, dtype=torch.int32),
      'i16': torch.arange(4, dtype=torch.int16),
      'i8': torch.arange(-2, 2, dtype=torch.int8),
      'u8': torch.arange(250, 256, dtype=torch.uint8),
      'bool': torch.tensor([True, False, True]),
      'scalar': torch.tensor(7),
      'empty': torch.zeros(0, 3),
      'base': base,
      'transposed': base.t(),        # same storage, strides (1, 4)
      'corner': base[1:, 2:],        # same storage, offset 6
      'strided': base[:, ::2],
  }
  return out


def expected(ts):
  return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in ts.items()}


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

  def __init__(self, base_width=64, num_classes=10, mean=None, std=None):
    super().__init__()
    w = base_width
    self.mean, self.std = mean, std
    self.conv1 = torch.nn.Conv2d(3, w, 3, 1, 1, bias=False)
    cin = w
    for i, (cout, stride) in enumerate(((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2))):
      blocks = [PreActBlock(cin, cout, stride, 'shortcut'), PreActBlock(cout, cout, 1, 'shortcut')]
      setattr(self, f'layer{i + 1}', torch.nn.Sequential(*blocks))
      cin = cout
    self.bn = torch.nn.BatchNorm2d(cin)
    self.linear = torch.nn.Linear(cin, num_classes)

  def forward(self, x):
    if self.mean is not None:
      x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
    out = self.conv1(x)
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
  """The Madry/TRADES layout (conv1, block1..3.layer.i, bn1, fc), with TRADES' unused sub_block1."""

  def __init__(self, depth=10, width=1, num_classes=10):
    super().__init__()
    n = (depth - 4) // 6
    c = (16, 16 * width, 32 * width, 64 * width)
    self.conv1 = torch.nn.Conv2d(3, c[0], 3, 1, 1, bias=False)
    self.block1 = _Stage(c[0], c[1], 1, n)
    self.sub_block1 = _Stage(c[0], c[1], 1, n)   # in TRADES' module too; forward never calls it
    self.block2 = _Stage(c[1], c[2], 2, n)
    self.block3 = _Stage(c[2], c[3], 2, n)
    self.bn1 = torch.nn.BatchNorm2d(c[3])
    self.fc = torch.nn.Linear(c[3], num_classes)

  def forward(self, x):
    out = self.block3(self.block2(self.block1(self.conv1(x))))
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

  def __init__(self, depth=10, width=1, activation='swish', num_classes=10, mean=None, std=None):
    super().__init__()
    act = {'swish': torch.nn.SiLU, 'relu': torch.nn.ReLU}[activation]
    n = (depth - 4) // 6
    c = (16, 16 * width, 32 * width, 64 * width)
    self.mean, self.std = mean, std   # plain attributes: not in the state dict
    self.init_conv = torch.nn.Conv2d(3, c[0], 3, 1, 1, bias=False)
    self.layer = torch.nn.Sequential(DMGroup(n, c[0], c[1], 1, act), DMGroup(n, c[1], c[2], 2, act),
                                     DMGroup(n, c[2], c[3], 2, act))
    self.batchnorm = torch.nn.BatchNorm2d(c[3], momentum=0.01)
    self.relu = act()
    self.logits = torch.nn.Linear(c[3], num_classes)

  def forward(self, x):
    x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
    out = self.relu(self.batchnorm(self.layer(self.init_conv(x))))
    return self.logits(out.mean(dim=(2, 3)))


def _randomise_batch_norm(model, g):
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=g)
      m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
      m.running_mean = 0.2 * torch.randn(m.running_mean.shape, generator=g)
      m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=g)
  return model.eval()


def models():
  """Tiny random instances of each architecture: (file name, module, model config fields)."""
  torch.manual_seed(0)
  g = torch.Generator().manual_seed(1)
  mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2471, 0.2435, 0.2616])
  return [
      ('preact_resnet18_w4', _randomise_batch_norm(PreActResNet18(4), g), {}),
      ('preact_resnet18_w4_normalized',
       _randomise_batch_norm(PreActResNet18(4, mean=mean, std=std), g),
       {'mean': mean.tolist(), 'std': std.tolist()}),
      ('wide_resnet_10_1', _randomise_batch_norm(WideResNet(10, 1), g), {}),
      # DeepMind's CIFAR-10 constants (their std's first entry is 0.2471).
      ('dm_wide_resnet_10_2_swish', _randomise_batch_norm(DMWideResNet(
          10, 2, 'swish', mean=mean, std=torch.tensor([0.2471, 0.2435, 0.2616])), g),
       {'mean': mean.tolist(), 'std': [0.2471, 0.2435, 0.2616]}),
      ('dm_wide_resnet_16_1_relu', _randomise_batch_norm(DMWideResNet(
          16, 1, 'relu', mean=mean, std=std), g), {'mean': mean.tolist(), 'std': std.tolist()}),
  ]


def main():
  torch.manual_seed(0)
  os.makedirs(OUT, exist_ok=True)
  ts = tensors()
  np.savez(os.path.join(OUT, 'expected.npz'), **expected(ts))
  torch.save(ts, os.path.join(OUT, 'tensors.pt'))
  torch.save(ts, os.path.join(OUT, 'tensors_legacy.pt'), _use_new_zipfile_serialization=False)
  # A training script's checkpoint: weights of a DataParallel model beside other entries.
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))
  model = torch.nn.DataParallel(model)
  torch.save({'epoch': 3, 'best_acc': np.float64(0.5), 'state_dict': model.state_dict(),
              'optimizer': {'lr': 0.1}},
             os.path.join(OUT, 'training_checkpoint.pt'))
  np.savez(os.path.join(OUT, 'training_checkpoint_expected.npz'),
           **{k[len('module.'):]: v.numpy() for k, v in model.state_dict().items()})
  x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
  for name, model, extra in models():
    torch.save(model.state_dict(), os.path.join(OUT, f'{name}.pt'))
    with torch.no_grad():
      logits = model(x).numpy()
    np.savez(os.path.join(OUT, f'{name}_logits.npz'), x=x.permute(0, 2, 3, 1).numpy(),
             logits=logits, **{k: np.asarray(v, np.float32) for k, v in extra.items()})
  print('wrote', sorted(os.listdir(OUT)))


if __name__ == '__main__':
  main()
