"""Carlini-Wagner L2 attack (Carlini and Wagner 2017), minimum-norm, with a binary search on c.

Optimises w in tanh space, x' = (tanh(w) + 1) / 2, minimising ||x' - x||_2^2 + c * f(x') with
f = max(z_y - max_{j != y} z_j, -kappa) on the logits z (not the softmax: a distilled model's
saturated softmax would hide the gradient), by Adam from w = atanh(2x - 1) for every c. Each
example has its own c, starting at `initial_c`, raised 10x while no adversarial example is found
and bisected once one is. For robust accuracy at radius eps, the smallest adversarial example
found is returned when its L2 norm is <= eps, else x itself. An iterate is adversarial when its
margin max_{j != y} z_j - z_y exceeds kappa (Carlini & Wagner's test) plus a float32 guard.

The defaults are Carlini & Wagner's (their l2_attack.py, and the 1,000 iterations of the
test_attack.py behind the paper's MNIST and CIFAR figures): 9 values of c from 1e-3, Adam with
learning rate 0.01, kappa 0, and abort early: every steps // 10 iterations the loss is compared
with its value at the last such check, and an example whose loss has not fallen by 0.01% stops
for that value of c. Theirs checks the loss summed over the batch and stops the whole batch; here
each example stops by itself, so its result does not depend on which examples share its batch,
and it stops only once it has found an adversarial example for this c. Without that condition an
example whose pixels sit at 0 or 1 (most of MNIST), where the tanh is flattest, stalls for its
first few hundred steps while its w moves towards the box's interior, and would be given up on:
on binary images with 100x logits that fools 69% of the points, against 100% with the
condition or without abort early (a summed loss hides this behind the examples that progress).
Their first check compares with a loss of 1e6 and so stops at once any c whose loss starts above
it; here the first check never stops. The Adam loop is a `lax.while_loop` that ends when every
example of the batch has stopped or after `steps`.
"""

import jax
import jax.numpy as jnp

from robust_jax.attacks import objectives

DEFAULTS = dict(norm='l2', eps=0.5, steps=1000, restarts=1, search_steps=9, initial_c=1e-3,
                learning_rate=0.01, kappa=0.0, abort_early=True)

# Abort early: stop once the loss fails to fall below this fraction of its value at the last check.
_ABORT_RATIO = 0.9999
# An iterate counts as adversarial when max_{j != y} z_j - z_y > kappa + _MARGIN_TOL * max_j |z_j|:
# the best iterate sits on the boundary, and the evaluation's own forward pass (compiled apart
# from the attack's) can round a margin of a few float32 ulps back to the true class. On the
# distilled MNIST model (logits ~1,000) 2 of 981 points were lost so, with margins of 3e-3 and
# 2e-4. The guard's cost in distance is negligible: 1e-4 of the logits' scale.
_MARGIN_TOL = 1e-4


def _atanh(v):
  v = jnp.clip(v * 2 - 1, -1 + 1e-6, 1 - 1e-6)
  return 0.5 * jnp.log((1 + v) / (1 - v))


def make_cw_l2(*, eps=0.5, steps=1000, search_steps=9, initial_c=1e-3, learning_rate=0.01,
               kappa=0.0, abort_early=True, norm='l2', restarts=1):
  """Builds `attack(logits_fn, x, y, key) -> x_adv` (deterministic; key unused).

  `steps`: at most that many Adam steps per value of c (fewer with `abort_early`);
  `search_steps` values of c; eps may be inf (unbounded).
  """
  del norm, restarts  # L2 only; the attack is deterministic.
  if not isinstance(abort_early, bool):
    raise ValueError(f'cw_l2: abort_early={abort_early!r} must be True or False.')
  check_every = max(steps // 10, 1)

  def attack(logits_fn, x, y, key):
    del key
    b = x.shape[0]
    num_classes = jax.eval_shape(logits_fn, x).shape[-1]
    onehot = jax.nn.one_hot(y, num_classes)
    axes = tuple(range(1, x.ndim))
    w0 = _atanh(x)

    def per_example(v):
      return v.reshape((-1,) + (1,) * (x.ndim - 1))

    def to_x(w):
      return (jnp.tanh(w) + 1) / 2

    def loss(w, c):
      xa = to_x(w)
      logits = logits_fn(xa)
      dist = jnp.sum(jnp.square(xa - x), axis=axes)
      f = jnp.maximum(-objectives.margin(logits, onehot), -kappa)
      each = dist + c * f
      return jnp.sum(each), (each, dist, logits)

    grad_fn = jax.grad(loss, has_aux=True)

    def search(_, carry):
      c, lo, hi, best_d, best_x = carry

      def adam_step(s):
        t, w, m, v, active, prev, found, best_d, best_x = s
        g, (each, dist, logits) = grad_fn(w, c)
        xa = to_x(w)
        margin = objectives.margin(logits, onehot)
        success = active & (margin > kappa + _MARGIN_TOL * jnp.max(jnp.abs(logits), -1))
        better = success & (dist < best_d)
        best_d = jnp.where(better, dist, best_d)
        best_x = jnp.where(per_example(better), xa, best_x)
        found = found | success
        if abort_early:
          at_check = t % check_every == 0
          stalled = each >= _ABORT_RATIO * prev  # (a loss of 0 has stalled)
          active = active & ~(at_check & stalled & found)
          prev = jnp.where(at_check, each, prev)
        m_new = 0.9 * m + 0.1 * g
        v_new = 0.999 * v + 0.001 * g * g
        tf = t.astype(jnp.float32) + 1.0
        mhat = m_new / (1 - 0.9 ** tf)
        vhat = v_new / (1 - 0.999 ** tf)
        w_new = w - learning_rate * mhat / (jnp.sqrt(vhat) + 1e-8)
        # A stopped example keeps the state it was last evaluated at; nothing it does depends on
        # its batch-mates.
        act = per_example(active)
        w, m, v = (jnp.where(act, w_new, w), jnp.where(act, m_new, m),
                   jnp.where(act, v_new, v))
        return t + 1, w, m, v, active, prev, found, best_d, best_x

      def running(s):
        return (s[0] < steps) & jnp.any(s[4])

      zeros = jnp.zeros_like(x)
      init = (jnp.zeros((), jnp.int32), w0, zeros, zeros, jnp.ones((b,), bool),
              jnp.full((b,), jnp.inf), jnp.zeros((b,), bool), best_d, best_x)
      out = jax.lax.while_loop(running, adam_step, init)
      found, best_d, best_x = out[6:]
      # Found: c was enough, search lower; not found: search higher (x10 until bracketed).
      hi = jnp.where(found, jnp.minimum(hi, c), hi)
      lo = jnp.where(found, lo, jnp.maximum(lo, c))
      c = jnp.where(hi < jnp.inf, (lo + hi) / 2, c * 10)
      return c, lo, hi, best_d, best_x

    init = (jnp.full((b,), initial_c, jnp.float32), jnp.zeros((b,)), jnp.full((b,), jnp.inf),
            jnp.full((b,), jnp.inf), x)
    _, _, _, best_d, best_x = jax.lax.fori_loop(0, search_steps, search, init)
    ok = jnp.sqrt(best_d) <= eps
    return jax.lax.stop_gradient(jnp.where(per_example(ok), best_x, x))

  return attack
