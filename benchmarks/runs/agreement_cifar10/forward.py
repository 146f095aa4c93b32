"""One inference forward pass of the exported CIFAR-10 model (PreAct ResNet-18, base_width 8) in
robust_jax (XLA, jitted) and in torch (1 thread), at the batch of Square's bucket (64) and at the
46 points Square attacked, 20 calls each; run from the repository's root with .venv-ref:

  PYTHONPATH=. .venv-ref/bin/python benchmarks/runs/agreement_cifar10/forward.py PATH.pt
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import torch_layouts
from configs import default
from robust_jax.interop import torch_models

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)


def main(path):
  torch.set_num_threads(1)
  c = default.get_config()
  c.model.name, c.model.base_width = 'preact_resnet18', 8
  f = jax.jit(torch_models.torch_logits_fn(path, c.model, num_classes=10, mean=MEAN, std=STD))
  net = torch_layouts.build(c.model, num_classes=10, mean=MEAN, std=STD)
  net.load_state_dict(torch_layouts.state_dict(path))
  net.eval()
  x = np.random.default_rng(0).random((64, 32, 32, 3), dtype=np.float32)
  for b in (64, 46):
    xb = jnp.asarray(x[:b])
    f(xb).block_until_ready()
    t = time.perf_counter()
    for _ in range(20):
      f(xb).block_until_ready()
    jax_ms = (time.perf_counter() - t) / 20 * 1000
    xt = torch.from_numpy(x[:b].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
      net(xt)
      t = time.perf_counter()
      for _ in range(20):
        net(xt)
    torch_ms = (time.perf_counter() - t) / 20 * 1000
    print(f'batch {b}: robust_jax {jax_ms:.1f} ms, torch {torch_ms:.1f} ms')


if __name__ == '__main__':
  main(sys.argv[1])
