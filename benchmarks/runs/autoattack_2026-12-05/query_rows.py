"""A Square query's cost per image against the batch's rows: small_cnn (random init) forward
passes in a 300-iteration fori_loop at 331 to 448 rows, best of three rounds each (this tree)."""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import robust_jax  # noqa: F401  (applies robust_jax's XLA:CPU flags before JAX starts)
from robust_jax import model_fns
from robust_jax import models

QUERIES = 300


def main():
  model = models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=10,
                       mean=(0.3,), std=(0.3,))
  v = model_fns.init_variables(model, jax.random.key(0), (28, 28, 1))
  logits_fn = model_fns.logits_fn(model, v['params'], {})

  @jax.jit
  def queries(x):
    body = lambda i, acc: acc + logits_fn(x + 1e-6 * i.astype(jnp.float32))[:, 0]
    return jax.lax.fori_loop(0, QUERIES, body, jnp.zeros(x.shape[0]))

  times = {}
  for _ in range(3):
    for rows in (331, 336, 344, 352, 384, 400, 448):
      x = jnp.asarray(np.random.RandomState(0).rand(rows, 28, 28, 1).astype(np.float32))
      jax.block_until_ready(queries(x))
      t0 = time.perf_counter()
      jax.block_until_ready(queries(x))
      times.setdefault(rows, []).append(time.perf_counter() - t0)
  for rows, ts in times.items():
    print(f'{rows} rows: {min(ts):.3f} s for {QUERIES} queries, '
          f'{min(ts) / QUERIES / rows * 1e6:.2f} us per image', flush=True)


if __name__ == '__main__':
  main()
