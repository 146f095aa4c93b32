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


def main():
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
  print('wrote', sorted(os.listdir(OUT)))


if __name__ == '__main__':
  main()
