"""The CIFAR-10 demo PreAct ResNet-18/8 (workdirs/cifar10_demo.pt) in JAX and in torch (2 threads):
microseconds per row of a forward pass and of an input gradient at R rows (argv[1], default 48),
100 passes in a jitted fori_loop / a Python loop, best of three rounds, interleaved."""

import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch

import robust_jax  # noqa: F401  (robust_jax's XLA:CPU flags)
from robust_jax.interop import torch_models

sys.path.insert(0, 'benchmarks')
import torch_layouts  # noqa: E402  pylint: disable=g-import-not-at-top

PASSES = 100
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def main():
  rows = int(sys.argv[1]) if len(sys.argv) > 1 else 48
  path = 'workdirs/cifar10_demo.pt'
  cfg = ml_collections.ConfigDict(dict(name='preact_resnet18', base_width=8))
  logits_fn = torch_models.torch_logits_fn(path, cfg, num_classes=10, mean=MEAN, std=STD,
                                           image_shape=(32, 32, 3))
  net = torch_layouts.load(path, cfg, num_classes=10, mean=MEAN, std=STD, in_channels=3).eval()
  torch.set_num_threads(2)
  x = np.random.RandomState(0).rand(rows, 32, 32, 3).astype(np.float32)

  @jax.jit
  def forward(x):
    body = lambda i, acc: acc + logits_fn(x + 1e-6 * i.astype(jnp.float32))[:, 0]
    return jax.lax.fori_loop(0, PASSES, body, jnp.zeros(x.shape[0]))

  @jax.jit
  def grads(x):
    g = jax.grad(lambda x, i: logits_fn(x + 1e-6 * i)[:, 0].sum())
    body = lambda i, acc: acc + g(x, i.astype(jnp.float32))
    return jax.lax.fori_loop(0, PASSES, body, jnp.zeros_like(x))

  xj = jnp.asarray(x)
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

  def torch_forward():
    with torch.no_grad():
      acc = 0
      for i in range(PASSES):
        acc = acc + net(xt + 1e-6 * i)[:, 0]

  def torch_grads():
    for i in range(PASSES):
      xx = (xt + 1e-6 * i).requires_grad_(True)
      net(xx)[:, 0].sum().backward()

  fns = {'jax forward': lambda: jax.block_until_ready(forward(xj)), 'torch forward': torch_forward,
         'jax input gradient': lambda: jax.block_until_ready(grads(xj)),
         'torch input gradient': torch_grads}
  for f in fns.values():
    f()
  times = {}
  for _ in range(3):
    for name, f in fns.items():
      t = time.perf_counter()
      f()
      times.setdefault(name, []).append(time.perf_counter() - t)
  for name, ts in times.items():
    print(f'{name}: {min(ts) / PASSES / rows * 1e6:.1f} us per row ({rows} rows)', flush=True)


if __name__ == '__main__':
  main()
