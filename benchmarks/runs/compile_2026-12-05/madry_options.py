"""The madry_cnn PGD-40 program (batch 256, random weights and images, as the harness) compiled
with each JSON dict of XLA compiler options given (argv: model, then the dicts), two rounds:
compile time, img-steps/s (min of 3 calls), output bits. Run from the repository's root with
PYTHONPATH=.
"""

import hashlib
import json
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import robust_jax  # noqa: F401  (its XLA:CPU settings, as in every run)
from robust_jax import attacks
from robust_jax import model_fns
from robust_jax import models


def main():
  name, options = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
  model = models.build(ml_collections.ConfigDict(dict(name=name)), num_classes=10, mean=(0.5,),
                       std=(0.25,))
  variables = model_fns.init_variables(model, jax.random.key(0), (28, 28, 1))
  fn = model_fns.logits_fn(model, variables['params'], {})
  x = jax.random.uniform(jax.random.key(1), (256, 28, 28, 1))
  y = jnp.arange(256) % 10
  keys = jax.random.split(jax.random.key(2), 256)
  attack = attacks.build(dict(name='pgd', norm='linf', eps=0.1, steps=40, step_size=0.01,
                              track_best=False))
  for _ in range(2):
    for opts in options:
      lowered = jax.jit(lambda a, b, k: attack(fn, a, b, k),
                        compiler_options=opts or None).lower(x, y, keys)
      t0 = time.perf_counter()
      compiled = lowered.compile()
      tc = time.perf_counter() - t0
      out = jax.block_until_ready(compiled(x, y, keys))
      times = []
      for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x, y, keys))
        times.append(time.perf_counter() - t0)
      bits = hashlib.sha256(np.asarray(out).tobytes()).hexdigest()[:10]
      print(f'{name} {opts}: compile {tc:.2f} s, {256 * 40 / min(times):.0f} img-steps/s, '
            f'bits {bits}', flush=True)


if __name__ == '__main__':
  main()
