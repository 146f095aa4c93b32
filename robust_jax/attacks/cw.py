"""Carlini-Wagner L2 attack (Carlini and Wagner 2017), minimum-norm, with a binary search on c.

Optimises w in tanh space, x' = (tanh(w) + 1) / 2, minimising ||x' - x||_2^2 + c * f(x') with
f = max(z_y - max_{j != y} z_j, -kappa), by Adam. Each example has its own c, raised 10x while no
adversarial example is found and bisected once one is. For robust accuracy at radius eps, the
smallest adversarial example found is returned when its L2 norm is <= eps, else x itself.
"""

import jax
import jax.numpy as jnp

from robust_jax.attacks import objectives

DEFAULTS = dict(norm='l2', eps=0.5, steps=100, restarts=1, search_steps=6, initial_c=0.1,
                learning_rate=0.01, kappa=0.0)


def _atanh(v):
  v = jnp.clip(v * 2 - 1, -1 + 1e-6, 1 - 1e-6)
  return 0.5 * jnp.log((1 + v) / (1 - v))


def make_cw_l2(*, eps=0.5, steps=100, search_steps=6, initial_c=0.1, learning_rate=0.01,
               kappa=0.0, norm='l2', restarts=1):
  """Builds `attack(logits_fn, x, y, key) -> x_adv` (deterministic; key unused).

  `steps` Adam steps per value of c; `search_steps` values of c; eps may be inf (unbounded).
  """
  del norm, restarts  # L2 only; the attack is deterministic.

  def attack(logits_fn, x, y, key):
    del key
    b = x.shape[0]
    num_classes = jax.eval_shape(logits_fn, x).shape[-1]
    onehot = jax.nn.one_hot(y, num_classes)
    axes = tuple(range(1, x.ndim))
    w0 = _atanh(x)

    def to_x(w):
      return (jnp.tanh(w) + 1) / 2

    def loss(w, c):
      xa = to_x(w)
      logits = logits_fn(xa)
      dist = jnp.sum(jnp.square(xa - x), axis=axes)
      f = jnp.maximum(-objectives.margin(logits, onehot), -kappa)
      return jnp.sum(dist + c * f), (dist, logits)

    grad_fn = jax.grad(loss, has_aux=True)

    def search(_, carry):
      c, lo, hi, best_d, best_x = carry

      def adam_step(t, s):
        w, m, v, found, best_d, best_x = s
        g, (dist, logits) = grad_fn(w, c)
        xa = to_x(w)
        success = jnp.argmax(logits, -1) != y
        better = success & (dist < best_d)
        best_d = jnp.where(better, dist, best_d)
        best_x = jnp.where(better.reshape((-1,) + (1,) * (x.ndim - 1)), xa, best_x)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        mhat = m / (1 - 0.9 ** (t + 1.0))
        vhat = v / (1 - 0.999 ** (t + 1.0))
        w = w - learning_rate * mhat / (jnp.sqrt(vhat) + 1e-8)
        return w, m, v, found | success, best_d, best_x

      zeros = jnp.zeros_like(x)
      init = (w0, zeros, zeros, jnp.zeros((b,), bool), best_d, best_x)
      _, _, _, found, best_d, best_x = jax.lax.fori_loop(0, steps, adam_step, init)
      # Found: c was enough, search lower; not found: search higher (x10 until bracketed).
      hi = jnp.where(found, jnp.minimum(hi, c), hi)
      lo = jnp.where(found, lo, jnp.maximum(lo, c))
      c = jnp.where(hi < jnp.inf, (lo + hi) / 2, c * 10)
      return c, lo, hi, best_d, best_x

    init = (jnp.full((b,), initial_c), jnp.zeros((b,)), jnp.full((b,), jnp.inf),
            jnp.full((b,), jnp.inf), x)
    _, _, _, best_d, best_x = jax.lax.fori_loop(0, search_steps, search, init)
    ok = jnp.sqrt(best_d) <= eps
    return jax.lax.stop_gradient(jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), best_x, x))

  return attack
