"""Writes tests/fixtures/torch/: small checkpoints saved by torch itself, and their values.

Run with the reference venv (requirements-ref.txt), the only one that has torch:

    .venv-ref/bin/python scripts/make_torch_fixtures.py

The tests read these files with robust_jax.interop (no torch) and compare with `expected.npz`,
written here by torch's own `.numpy()`. The files are small and committed, so CI checks the reader
without torch. The modules are benchmarks/torch_layouts.py's.
"""

import os
import sys

import numpy as np
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks.torch_layouts import DMWideResNet  # noqa: E402
from benchmarks.torch_layouts import PreActResNet18  # noqa: E402
from benchmarks.torch_layouts import WideResNet  # noqa: E402

OUT = os.path.join(_ROOT, 'tests', 'fixtures', 'torch')


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
