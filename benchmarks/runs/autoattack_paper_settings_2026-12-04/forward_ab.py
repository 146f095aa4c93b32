"""small_cnn (random init) per-call times in ms, one code tree (PYTHONPATH): the jitted forward pass
at 64 and 256 rows, a Square query (square._search, iterations 1000-1100) at 64 and 256 rows and a
PGD-style gradient step (fori_loop of 40) at 256 rows; best of 5. Used for the A/B of
fast_ops.strided_conv (commands.sh)."""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import robust_jax  # noqa: F401  (applies robust_jax's XLA:CPU flags before JAX starts)
from robust_jax.attacks import square
from robust_jax.models.cnns import SmallCNN

MODEL = SmallCNN(num_classes=10, mean=(0.2860,), std=(0.3530,))
VARIABLES = MODEL.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)


def logits(x):
  return MODEL.apply(VARIABLES, x, train=False)


def _images(b):
  return jnp.asarray(np.random.rand(b, 28, 28, 1).astype(np.float32))


def _best_ms(call, per_call, reps=5):
  """Best of `reps` timings of `call()`, in ms per unit of `per_call` units."""
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append((time.perf_counter() - t0) / per_call * 1e3)
  return min(times)


def forward(b, n=100):
  x, f = _images(b), jax.jit(logits)
  f(x).block_until_ready()

  def calls():
    for _ in range(n):
      y = f(x)
    return y
  return _best_ms(calls, n)


def square_query(b, n=100):
  x, y = _images(b), jnp.zeros(b, jnp.int32)
  start, search = square._search('linf', 0.1, 5000, 0.8)  # pylint: disable=protected-access
  keys = jax.random.split(jax.random.key(0), b)
  c0 = jax.jit(lambda x, y, k: start(logits, x, y, k))(x, y, keys)
  g = jax.jit(lambda x, y, k, c: search(logits, x, y, k, c, 1000, 1000 + n))
  jax.block_until_ready(g(x, y, keys, c0))
  return _best_ms(lambda: g(x, y, keys, c0), n)


def pgd_step(b, n=40):
  x, y = _images(b), jnp.zeros(b, jnp.int32)

  def loss(xa):
    return -jnp.sum(jax.nn.log_softmax(logits(xa))[jnp.arange(b), y])

  def body(_, xa):
    return jnp.clip(xa + 0.01 * jnp.sign(jax.grad(loss)(xa)), 0, 1)
  g = jax.jit(lambda x: jax.lax.fori_loop(0, n, body, x))
  g(x).block_until_ready()
  return _best_ms(lambda: g(x), n)


if __name__ == '__main__':
  print(sys.argv[1], 'fwd64 %.3f fwd256 %.3f sq64 %.3f sq256 %.3f pgd256 %.3f' % (
      forward(64), forward(256), square_query(64), square_query(256), pgd_step(256)), flush=True)
