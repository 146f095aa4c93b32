"""Square's cost beyond the model's forward passes: robust_jax's Square (L-inf, eps 0.1, 1,000
queries, one run) against a fori_loop of 1,000 forward passes, on the first N Fashion-MNIST test
images and the zoo's PGD-AT small_cnn (min of 3 calls each after one warm-up). Usage, from the
repository's root: PYTHONPATH=. python square_overhead.py N
"""

import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from benchmarks import agreement
from configs import default
from robust_jax import data as data_lib
from robust_jax import models
from robust_jax.attacks import square

QUERIES = 1000


def _seconds(fn, *args):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return min(times)


def main(n):
  flags.FLAGS(['x'])
  cfg = default.get_config().data
  cfg.name = 'fashion_mnist'
  ds = data_lib.load(cfg)
  model = models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=10,
                       mean=ds.mean, std=ds.std)
  params, _, _ = agreement.load_params(model, 'workdirs/zoo/pgd_at', ds.test_images.shape[1:],
                                       len(ds.train_labels))
  x = jnp.asarray(ds.test_images[:n].astype(np.float32) / 255.0)
  y = jnp.asarray(ds.test_labels[:n].astype(np.int32))
  apply = lambda p, a: model.apply({'params': p}, a, train=False)  # noqa: E731
  run = square.make_square_run(norm='linf', eps=0.1, steps=QUERIES)
  attack = jax.jit(lambda p, a, b, k: run(lambda z: apply(p, z), a, b,
                                          jax.random.split(k, a.shape[0])))

  def forwards(p, a):
    def body(i, acc):
      return acc + apply(p, jnp.clip(a + 0.001 * i, 0.0, 1.0))[:, 0]
    return jax.lax.fori_loop(0, QUERIES, body, jnp.zeros(a.shape[0]))
  t_square = _seconds(attack, params, x, y, jax.random.key(0))
  t_forward = _seconds(jax.jit(forwards), params, x)
  print(f'{n} rows, {QUERIES} queries: Square {t_square:.2f} s, forward passes alone '
        f'{t_forward:.2f} s, ratio {t_square / t_forward:.2f}', flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]))
