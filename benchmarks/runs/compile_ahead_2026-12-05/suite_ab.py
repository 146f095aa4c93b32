"""robust_jax's standard suite alone, compiled ahead or not (eval.compile_ahead), one cold
evaluation per process: `suite_ab.py MODEL on|off`, MODEL = a small_cnn workdir (first 500
Fashion-MNIST test images, eps 0.1) or `cifar10_demo` (workdirs/cifar10_demo.pt, PreAct
ResNet-18/8, first 200 CIFAR-10 test images, eps 8/255). Batch 500, no sanity checks, no
persistent compile cache. Prints the suite's time, robust accuracy and cascade."""

import os
import sys
import time

import ml_collections
import numpy as np

import robust_jax
from robust_jax import data as data_lib
from robust_jax import model_fns
from robust_jax import models
from robust_jax.eval import api
from robust_jax.interop import torch_models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
sys.path.insert(0, ROOT)
from benchmarks import agreement  # noqa: E402  pylint: disable=g-import-not-at-top
from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top


def load(which):
  """(logits_fn, x, y, eps) of the named model and its test images."""
  cfg = default.get_config().data
  if which == 'cifar10_demo':
    cfg.name = 'cifar10'
    ds = data_lib.load(cfg)
    arch = ml_collections.ConfigDict(dict(name='preact_resnet18', base_width=8))
    fn = torch_models.torch_logits_fn('workdirs/cifar10_demo.pt', arch, num_classes=10,
                                      mean=ds.mean, std=ds.std, image_shape=(32, 32, 3))
    n, eps = 200, 8 / 255
  else:
    cfg.name = 'fashion_mnist'
    ds = data_lib.load(cfg)
    model = models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=10,
                         mean=ds.mean, std=ds.std)
    params, _, _ = agreement.load_params(model, which, ds.test_images.shape[1:],
                                         len(ds.train_labels))
    fn = model_fns.logits_fn(model, params, {})
    n, eps = 500, 0.1
  x = ds.test_images[:n].astype(np.float32) / 255
  return fn, x, ds.test_labels[:n].astype(np.int32), eps


def main():
  which, ahead = sys.argv[1], sys.argv[2] == 'on'
  fn, x, y, eps = load(which)
  make = api._config  # pylint: disable=protected-access

  def config(*args):
    c = make(*args)
    c.eval.compile_ahead = ahead
    return c

  api._config = config  # pylint: disable=protected-access
  t0 = time.perf_counter()
  res = robust_jax.evaluate(fn, x, y, norm='Linf', eps=eps, suite='standard', batch_size=500,
                            sanity_checks=False, seed=0, verbose=False)
  print(f'{which} compile_ahead={sys.argv[2]}: suite {res["suite"]["accuracy"]:.3f} in '
        f'{time.perf_counter() - t0:.1f} s:',
        [(a['name'], a['attacked'], a['broken'], round(a['seconds'], 1))
         for a in res['suite']['attacks']], flush=True)


if __name__ == '__main__':
  main()
