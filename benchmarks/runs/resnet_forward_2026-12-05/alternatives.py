"""The thin 3x3 convolutions of PreAct ResNet-18/8 (8 channels at 32x32, 16 at 16x16, 32 at 8x8;
48 rows, forward) written other ways: XLA's convolution, robust_jax's patches matmul
(fast_ops.patches_conv), three column shifts stacked on the channel axis then a 3x1
convolution, and NCHW. Microseconds per call, 200 calls in a loop, best of three; err: the
largest difference from XLA's convolution."""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import robust_jax  # noqa: F401  (robust_jax's XLA:CPU flags)
from robust_jax.models import fast_ops

ROWS, CALLS = 48, 200
DIMS = ('NHWC', 'HWIO', 'NHWC')


def columns(x, w):
  """Three column shifts on the channel axis, then a 3x1 convolution over 3*C channels."""
  x = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
  width = x.shape[2] - 2
  cols = jnp.concatenate([x[:, :, j:j + width, :] for j in range(3)], axis=-1)
  return lax.conv_general_dilated(cols, w.reshape(3, 1, 3 * w.shape[2], w.shape[3]), (1, 1),
                                  ((1, 1), (0, 0)), dimension_numbers=DIMS)


def nchw(x, w):
  y = lax.conv_general_dilated(jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1)),
                               (1, 1), ((1, 1), (1, 1)),
                               dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
  return jnp.transpose(y, (0, 2, 3, 1))


VARIANTS = {
    'xla': lambda x, w: lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                 dimension_numbers=DIMS),
    'patches': lambda x, w: fast_ops.patches_conv(x, w, (1, 1), ((1, 1), (1, 1))),
    'columns': columns,
    'nchw': nchw,
}


def time_variant(fn, x, w):
  @jax.jit
  def f(x, w):
    body = lambda i, acc: acc + fn(x + 1e-6 * i.astype(jnp.float32), w)[..., 0].sum((1, 2))
    return lax.fori_loop(0, CALLS, body, jnp.zeros(ROWS))
  jax.block_until_ready(f(x, w))
  times = []
  for _ in range(3):
    t = time.perf_counter()
    jax.block_until_ready(f(x, w))
    times.append(time.perf_counter() - t)
  return min(times) / CALLS


def main():
  for h, c in ((32, 8), (16, 16), (8, 32)):
    x = jnp.asarray(np.random.rand(ROWS, h, h, c).astype(np.float32))
    w = jnp.asarray(np.random.randn(3, 3, c, c).astype(np.float32) * 0.1)
    ref = VARIANTS['xla'](x, w)
    out = []
    for name, fn in VARIANTS.items():
      err = float(jnp.max(jnp.abs(fn(x, w) - ref)))
      out.append(f'{name} {time_variant(fn, x, w) * 1e6:.0f} us (err {err:.1e})')
    print(f'{h}x{h} {c}->{c}: ' + ', '.join(out), flush=True)


if __name__ == '__main__':
  main()
