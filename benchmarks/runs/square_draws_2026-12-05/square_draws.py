"""Square's random draws made ahead for a block of queries instead of one query at a time: the
same windows and signs (the same bits), faster or not? robust_jax's Square (L-inf, eps 0.1, one
run of 1,000 queries) against a copy of its search loop whose per-query draws (fold_in, split,
randint, bernoulli per example) are drawn for K queries at once (vmapped over the queries) at the
start of each block, on the first N Fashion-MNIST test images and the zoo's PGD-AT small_cnn;
min of 3 calls after a warm-up, two rounds. Usage, from the repository's root:
PYTHONPATH=. python square_draws.py N K
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
from robust_jax.attacks import objectives
from robust_jax.attacks import square

QUERIES, EPS, P_INIT = 1000, 0.1, 0.8


def _draw(run_key, i, side, shape):
  """Query i's window corner and signs for one example, as square.linf_propose draws them."""
  height, width, channels = shape
  k_win, k_sign = jax.random.split(jax.random.fold_in(run_key, i))
  k_top, k_left = jax.random.split(k_win)
  top = jax.random.randint(k_top, (), 0, height - side + 1)
  left = jax.random.randint(k_left, (), 0, width - side + 1)
  return top, left, square._signs(k_sign, (channels,))  # pylint: disable=protected-access


def predrawn_run(block):
  """`square.make_square_run(norm='linf')`'s run with the draws made `block` queries at a time."""
  start, _ = square._search('linf', EPS, QUERIES, P_INIT)  # pylint: disable=protected-access

  def run(logits_fn, x, y, run_keys):
    height, width = x.shape[1:3]
    onehot = jax.nn.one_hot(y, 10, dtype=jnp.float32)
    margin = lambda xa: objectives.margin(logits_fn(xa), onehot)  # noqa: E731

    def blocks(c, carry):
      iters = c * block + jnp.arange(block)
      sides = jax.vmap(lambda i: square.window_side(i, QUERIES, P_INIT, height, width,
                                                    'linf'))(iters)
      tops, lefts, signs = jax.vmap(lambda i, s: jax.vmap(
          lambda k: _draw(k, i, s, x.shape[1:]))(run_keys))(iters, sides)

      def body(j, carry):
        x_best, best = carry
        rows = jnp.arange(height)[None, :, None] - tops[j][:, None, None]
        cols = jnp.arange(width)[None, None, :] - lefts[j][:, None, None]
        inside = ((rows >= 0) & (rows < sides[j]) & (cols >= 0) & (cols < sides[j]))[..., None]
        x_new = jnp.clip(jnp.where(inside, x + EPS * signs[j][:, None, None, :], x_best), 0, 1)
        value = margin(x_new)
        take = (best <= 0) & (value > best)
        return jnp.where(take[:, None, None, None], x_new, x_best), jnp.where(take, value, best)

      return jax.lax.fori_loop(0, block, body, carry)

    return jax.lax.fori_loop(0, QUERIES // block, blocks, start(logits_fn, x, y, run_keys))

  return run


def _seconds(fn, *args):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return min(times)


def main(n, block):
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

  def jitted(run):
    return jax.jit(lambda p, a, b, k: run(lambda z: apply(p, z), a, b,
                                          jax.random.split(k, a.shape[0])))
  now = jitted(square.make_square_run(norm='linf', eps=EPS, steps=QUERIES, p_init=P_INIT))
  ahead = jitted(predrawn_run(block))
  a, b = now(params, x, y, jax.random.key(0)), ahead(params, x, y, jax.random.key(0))
  same = all(bool(jnp.all(u == v)) for u, v in zip(a, b))
  for r in (1, 2):
    print(f'round {r}, {n} rows, {QUERIES} queries, blocks of {block}: as it is '
          f'{_seconds(now, params, x, y, jax.random.key(0)):.2f} s, drawn ahead '
          f'{_seconds(ahead, params, x, y, jax.random.key(0)):.2f} s; same bits: {same}',
          flush=True)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]))
