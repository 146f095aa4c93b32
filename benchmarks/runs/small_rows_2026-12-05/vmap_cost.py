"""small_cnn vmapped over 256 single images (as robust_jax.evaluate runs a random function) and
over 16 blocks of 16 rows (restarts): forward and input-gradient time with fast_ops on and off
(random weights; min of 5 calls after one warm-up). Run from the repository's root with
PYTHONPATH=.
"""

import time

import jax
import ml_collections

from robust_jax import models


def _model(fast):
  return models.build(ml_collections.ConfigDict(dict(name='small_cnn', fast_ops=fast)),
                      num_classes=10, mean=(0.3,), std=(0.35,))


def _ms(fn, arg):
  jax.block_until_ready(fn(arg))
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(arg))
    times.append(time.perf_counter() - t0)
  return min(times) * 1e3


def main():
  x = jax.random.uniform(jax.random.key(0), (256, 28, 28, 1))
  variables = _model(True).init(jax.random.key(1), x[:1], train=False)
  for fast in (True, False):
    _report(fast, _model(fast), variables, x)


def _report(fast, model, variables, x):
  logits = lambda a: model.apply(variables, a, train=False)  # noqa: E731
  single = jax.jit(jax.vmap(lambda xi: logits(xi[None])[0]))
  grads = jax.jit(jax.vmap(jax.grad(lambda xi: logits(xi[None])[0, 3])))
  blocks = jax.jit(jax.vmap(logits))
  print(f'fast_ops={fast}: vmapped single images forward {_ms(single, x):.2f} ms, input '
        f'gradients {_ms(grads, x):.2f} ms; 16 x 16 rows forward '
        f'{_ms(blocks, x.reshape(16, 16, 28, 28, 1)):.2f} ms', flush=True)

if __name__ == '__main__':
  main()
