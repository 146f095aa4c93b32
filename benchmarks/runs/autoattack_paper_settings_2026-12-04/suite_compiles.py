"""robust_jax's standard suite alone on the zoo's PGD-AT small_cnn (first 500 Fashion-MNIST test
images, eps 0.1, batch 500): total seconds and the cascade. Run with JAX_LOG_COMPILES=1 to see
each program's compile time (commands.sh)."""

import os
import sys
import time

import ml_collections
import numpy as np

import robust_jax
from robust_jax import data as data_lib
from robust_jax import model_fns
from robust_jax import models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
sys.path.insert(0, ROOT)
from benchmarks import agreement  # noqa: E402  pylint: disable=g-import-not-at-top
from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top


def main():
  cfg = default.get_config().data
  cfg.name = 'fashion_mnist'
  ds = data_lib.load(cfg)
  model = models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=10,
                       mean=ds.mean, std=ds.std)
  params, _, _ = agreement.load_params(model, 'workdirs/zoo/pgd_at', ds.test_images.shape[1:],
                                       len(ds.train_labels))
  x = ds.test_images[:500].astype(np.float32) / 255
  y = ds.test_labels[:500].astype(np.int32)
  t0 = time.perf_counter()
  res = robust_jax.evaluate(model_fns.logits_fn(model, params, {}), x, y, norm='Linf', eps=0.1,
                            suite='standard', batch_size=500, sanity_checks=False, seed=0,
                            verbose=False)
  print(f'suite {res["suite"]["accuracy"]:.3f} in {time.perf_counter() - t0:.1f} s:',
        [(a['name'], a['attacked'], a['broken'], round(a['seconds'], 1))
         for a in res['suite']['attacks']], flush=True)


if __name__ == '__main__':
  main()
