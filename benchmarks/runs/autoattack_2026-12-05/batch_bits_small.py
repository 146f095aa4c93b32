"""Below 64 rows: are a model's logits (L) and input gradients (G) for the first b of 64 images
bitwise the same in a b-row batch as in the 64-row batch? One line per model, '-' where not
(random init, this tree). Usage: batch_bits_small.py MODEL H,W,C."""

import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import robust_jax  # noqa: F401  (applies robust_jax's XLA:CPU flags before JAX starts)
from robust_jax import model_fns
from robust_jax import models


def main(name, shape):
  extra = {'base_width': 8} if 'resnet' in name else {}
  model = models.build(ml_collections.ConfigDict(dict(name=name, **extra)), num_classes=10,
                       mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1])
  v = model_fns.init_variables(model, jax.random.key(0), shape)
  logits_fn = model_fns.logits_fn(model, v['params'], v.get('batch_stats', {}))
  logits = jax.jit(logits_fn)
  grads = jax.jit(jax.grad(lambda x: jnp.sum(logits_fn(x)[:, 3])))
  x = np.random.RandomState(0).rand(64, *shape).astype(np.float32)
  ref, ref_g = np.asarray(logits(x)), np.asarray(grads(x))
  cells = []
  for b in (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 63):
    same_l = np.array_equal(np.asarray(logits(x[:b])), ref[:b])
    same_g = np.array_equal(np.asarray(grads(x[:b])), ref_g[:b])
    cells.append(f'{b}:{"L" if same_l else "-"}{"G" if same_g else "-"}')
  print(f'{name} {shape}, rows:same logits/gradients as at 64 rows:', ' '.join(cells), flush=True)


if __name__ == '__main__':
  main(sys.argv[1], tuple(int(s) for s in sys.argv[2].split(',')))
