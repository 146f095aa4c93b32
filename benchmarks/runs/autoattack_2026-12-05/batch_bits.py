"""Does a batch's size change a model's bits? For the same images, logits and input gradients in
a b-row batch against those in a 64-row one (random init, this tree). Usage:
  batch_bits.py MODEL H,W,C above  # 64 to 520 rows (steps of 8, odd sizes): the sizes that differ
  batch_bits.py MODEL H,W,C below  # 1 to 63 rows: L / G where logits / gradients are the same"""

import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import robust_jax  # noqa: F401  (applies robust_jax's XLA:CPU flags before JAX starts)
from robust_jax import model_fns
from robust_jax import models

ABOVE = list(range(64, 521, 8)) + [65, 67, 99, 101, 331, 333, 399, 457]
BELOW = [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 63]


def main(name, shape, which):
  extra = {'base_width': 8} if 'resnet' in name else {}
  model = models.build(ml_collections.ConfigDict(dict(name=name, **extra)), num_classes=10,
                       mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1])
  v = model_fns.init_variables(model, jax.random.key(0), shape)
  logits_fn = model_fns.logits_fn(model, v['params'], v.get('batch_stats', {}))
  logits = jax.jit(logits_fn)
  grads = jax.jit(jax.grad(lambda x: jnp.sum(logits_fn(x)[:, 3])))
  rows = ABOVE if which == 'above' else BELOW
  x = np.random.RandomState(0).rand(max(rows + [64]), *shape).astype(np.float32)
  ref, ref_g = np.asarray(logits(x[:64])), np.asarray(grads(x[:64]))

  def same(b):  # (logits, gradients) of the first min(b, 64) rows as in the 64-row batch
    n = min(b, 64)
    return (np.array_equal(np.asarray(logits(x[:b]))[:n], ref[:n]),
            np.array_equal(np.asarray(grads(x[:b]))[:n], ref_g[:n]))

  if which == 'above':
    bad = [b for b in rows if not all(same(b))]
    print(f'{name} {shape}: {len(rows)} batch sizes from 64 to {max(rows)} rows; not bitwise '
          f'equal to the 64-row batch: {bad or "none"}', flush=True)
  else:
    cells = [f'{b}:' + ''.join(c if s else '-' for c, s in zip('LG', same(b))) for b in rows]
    print(f'{name} {shape}, rows:same logits/gradients as at 64 rows:', ' '.join(cells),
          flush=True)


if __name__ == '__main__':
  main(sys.argv[1], tuple(int(s) for s in sys.argv[2].split(',')), sys.argv[3])
