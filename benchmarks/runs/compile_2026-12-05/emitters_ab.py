"""Per-program option A/B: compile time, run time (min of 3) and output bits of one attack program
(argv: attack, rows[, model]); weights of the PGD-AT small_cnn (workdirs/zoo/pgd_at), or a random
init for another model. Run from the repository's root with PYTHONPATH=.
"""

import hashlib
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
from robust_jax import model_fns
from robust_jax import models
from robust_jax.attacks import apgd
from robust_jax.attacks import fab
from robust_jax.attacks import pgd
from robust_jax.attacks import square

ATTACKS = {
    'apgd_ce': lambda: apgd.make_apgd(norm='linf', eps=0.1, steps=100, loss='ce'),
    'apgd_t': lambda: apgd.make_apgd_targeted(norm='linf', eps=0.1, steps=100, num_targets=9),
    'fab_t': lambda: fab.make_fab_targeted(norm='linf', eps=0.1, steps=100, num_targets=9),
    'square': lambda: square.make_square(norm='linf', eps=0.1, steps=1000),
    'pgd': lambda: pgd.make_pgd(norm='linf', eps=0.1, step_size=0.01, steps=40),
}
OPTIONS = (None, {'xla_cpu_use_fusion_emitters': False})


def main():
  which, n = sys.argv[1], int(sys.argv[2])
  name = sys.argv[3] if len(sys.argv) > 3 else 'small_cnn'
  flags.FLAGS(['x'])
  dcfg = default.get_config().data
  dcfg.name = 'fashion_mnist'
  ds = data_lib.load(dcfg)
  model = models.build(ml_collections.ConfigDict(dict(name=name)), num_classes=10, mean=ds.mean,
                       std=ds.std)
  params, _, _ = agreement.load_params(model, 'workdirs/zoo/pgd_at' if name == 'small_cnn' else
                                       None, ds.test_images.shape[1:], len(ds.train_labels))
  fn = model_fns.logits_fn(model, params, {})
  x = jnp.asarray(ds.test_images[:n].astype(np.float32) / 255.0)
  y = jnp.asarray(ds.test_labels[:n].astype(np.int32))
  attack = ATTACKS[which]()
  for opts in OPTIONS * 2:
    lowered = jax.jit(lambda a, b, k: attack(fn, a, b, k)).lower(x, y, jax.random.key(0))
    t0 = time.perf_counter()
    compiled = lowered.compile(compiler_options=opts) if opts else lowered.compile()
    tc = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(x, y, jax.random.key(0)))
    times = []
    for _ in range(3):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(x, y, jax.random.key(0)))
      times.append(time.perf_counter() - t0)
    bits = hashlib.sha256(np.asarray(out).tobytes()).hexdigest()[:12]
    print(f'{which} n={n} opts={opts}: compile {tc:.2f} s, run min {min(times):.3f} s, '
          f'bits {bits}', flush=True)


if __name__ == '__main__':
  main()
