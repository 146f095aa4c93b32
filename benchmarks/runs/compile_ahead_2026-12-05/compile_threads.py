"""How many cores XLA:CPU's compiler keeps busy: wall and process CPU time of compiling the
standard suite's APGD-T and Square evaluation programs (the zoo's standard small_cnn, 32 rows),
each compiled alone in a fresh jit, three times."""

import os
import sys
import time

import jax
import ml_collections
import numpy as np

import robust_jax  # noqa: F401  (robust_jax's XLA:CPU flags)
from robust_jax import data as data_lib
from robust_jax import model_fns
from robust_jax import models
from robust_jax import parallel
from robust_jax import suites
from robust_jax.eval import batch_fns
from robust_jax.eval import target as target_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
sys.path.insert(0, ROOT)
from benchmarks import agreement  # noqa: E402  pylint: disable=g-import-not-at-top
from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top

ROWS = 32


def main():
  cfg = default.get_config().data
  cfg.name = 'fashion_mnist'
  ds = data_lib.load(cfg)
  model = models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=10,
                       mean=ds.mean, std=ds.std)
  params, _, _ = agreement.load_params(model, 'workdirs/zoo/standard', ds.test_images.shape[1:],
                                       len(ds.train_labels))
  tgt = target_lib.of_function(model_fns.logits_fn(model, params, {}), None)
  mesh = parallel.make_mesh(jax.devices()[:1])
  x, y, i = parallel.shard_batch((ds.test_images[:ROWS], ds.test_labels[:ROWS].astype(np.int32),
                                  np.arange(ROWS, dtype=np.int32)), mesh)
  key = jax.random.key(0)
  for name, attack in suites.attacks('standard', norm='linf', eps=0.1)[1::2]:
    for _ in range(3):
      staged = batch_fns.make_staged_eval_fns(tgt.apply, attack, mesh)
      carry = parallel.shard_batch(tuple(np.zeros(c.shape, c.dtype) for c in staged.carry(
          tgt.variables, x, y, i, key)), mesh)
      lowered = staged.step.lower(tgt.variables, x, y, i, key, carry, 0)
      w, c = time.perf_counter(), time.process_time()
      lowered.compile()
      w, c = time.perf_counter() - w, time.process_time() - c
      print(f'{name} {ROWS} rows: compile {w:.2f} s wall, {c:.2f} s CPU ({c / w:.2f} cores)',
            flush=True)


if __name__ == '__main__':
  main()
