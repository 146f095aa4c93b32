"""Each convolution shape of PreAct ResNet-18/8 on 32x32 inputs, 48 rows, forward only: XLA's
(lax, and robust_jax's fast_ops form) against torch's (NCHW and channels_last, 2 threads);
microseconds per call, 200 calls in a loop, best of three rounds. XLA_FLAGS may name other
XLA:CPU convolution back ends to compare (commands.sh)."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax

import robust_jax  # noqa: F401  (robust_jax's XLA:CPU flags)
from robust_jax.models import fast_ops

ROWS, CALLS = 48, 200
DIMS = ('NHWC', 'HWIO', 'NHWC')
# (H, C_in, C_out, kernel, stride)
SHAPES = [(32, 3, 8, 3, 1), (32, 8, 8, 3, 1), (32, 8, 16, 3, 2), (32, 8, 16, 1, 2),
          (16, 16, 16, 3, 1), (16, 16, 32, 3, 2), (8, 32, 32, 3, 1), (8, 32, 64, 3, 2),
          (4, 64, 64, 3, 1)]


def looped(conv):
  @jax.jit
  def f(x, w):
    body = lambda i, acc: acc + conv(x + 1e-6 * i.astype(jnp.float32), w)[:, 0, 0, 0]
    return lax.fori_loop(0, CALLS, body, jnp.zeros(ROWS))
  return f


def measure(h, ci, co, k, s):
  """One line: each implementation's time for this shape."""
  x = np.random.rand(ROWS, h, h, ci).astype(np.float32)
  w = np.random.randn(k, k, ci, co).astype(np.float32) * 0.1
  p = ((k // 2, k // 2), (k // 2, k // 2))
  plain = looped(lambda x, w: lax.conv_general_dilated(x, w, (s, s), p, dimension_numbers=DIMS))
  fast = looped(lambda x, w: fast_ops.conv_general_dilated(x, w, (s, s), p,
                                                           dimension_numbers=DIMS))
  xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()

  def torch_loop(xx):
    with torch.no_grad():
      acc = 0
      for i in range(CALLS):
        acc = acc + torch.nn.functional.conv2d(xx + 1e-6 * i, wt, stride=s, padding=k // 2)

  xj, wj = jnp.asarray(x), jnp.asarray(w)
  fns = {'xla': lambda: jax.block_until_ready(plain(xj, wj)),
         'fast_ops': lambda: jax.block_until_ready(fast(xj, wj)),
         'torch': lambda: torch_loop(xt),
         'torch channels_last': lambda: torch_loop(
             xt.contiguous(memory_format=torch.channels_last))}
  for f in fns.values():
    f()
  times = {}
  for _ in range(3):
    for name, f in fns.items():
      t = time.perf_counter()
      f()
      times.setdefault(name, []).append(time.perf_counter() - t)
  flops = 2 * ROWS * (h // s) ** 2 * k * k * ci * co
  print(f'{h}x{h} {ci}->{co} k{k} s{s}: ' + ', '.join(
      f'{n} {min(v) / CALLS * 1e6:.0f} us ({flops / (min(v) / CALLS) / 1e9:.0f} GFLOP/s)'
      for n, v in times.items()), flush=True)


def main():
  torch.set_num_threads(2)
  for shape in SHAPES:
    measure(*shape)


if __name__ == '__main__':
  main()
