"""Are a model's logits and input gradients for the same 64 images bitwise equal at every batch
size from 64 rows up (64 to 520 in steps of 8, and odd sizes)? One line per model: the sizes that
differ from the 64-row batch (random init, this tree). Usage: batch_bits_rows.py MODEL H,W,C."""

import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import robust_jax  # noqa: F401  (applies robust_jax's XLA:CPU flags before JAX starts)
from robust_jax import model_fns
from robust_jax import models

ROWS = list(range(64, 521, 8)) + [65, 67, 99, 101, 331, 333, 399, 457]


def main(name, shape):
  extra = {'base_width': 8} if 'resnet' in name else {}
  model = models.build(ml_collections.ConfigDict(dict(name=name, **extra)), num_classes=10,
                       mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1])
  v = model_fns.init_variables(model, jax.random.key(0), shape)
  logits_fn = model_fns.logits_fn(model, v['params'], v.get('batch_stats', {}))
  logits = jax.jit(logits_fn)
  grads = jax.jit(jax.grad(lambda x: jnp.sum(logits_fn(x)[:, 3])))
  x = np.random.RandomState(0).rand(max(ROWS), *shape).astype(np.float32)
  ref, ref_g = np.asarray(logits(x[:64])), np.asarray(grads(x[:64]))
  bad = [b for b in ROWS
         if not (np.array_equal(np.asarray(logits(x[:b]))[:64], ref)
                 and np.array_equal(np.asarray(grads(x[:b]))[:64], ref_g))]
  print(f'{name} {shape}: {len(ROWS)} batch sizes from 64 to {max(ROWS)} rows; not bitwise '
        f'equal to the 64-row batch: {bad or "none"}', flush=True)


if __name__ == '__main__':
  main(sys.argv[1], tuple(int(s) for s in sys.argv[2].split(',')))
