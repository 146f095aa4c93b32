"""DeepFool (Moosavi-Dezfooli et al. 2016): steps to the nearest linearised decision boundary.

At each step every class k != y is linearised, f_k = z_k - z_y with gradient w_k; the closest
boundary in the attack's norm is |f_k| / ||w_k||_dual, and the example moves onto it. Examples
stop once misclassified. The total perturbation is scaled by (1 + overshoot). A minimum-norm
attack: for robust accuracy at radius eps, the result is returned when within eps, else x.
"""

import jax
import jax.numpy as jnp

from robust_jax.attacks import threat

DEFAULTS = dict(norm='l2', eps=0.5, steps=50, restarts=1, overshoot=0.02, num_candidates=10)


def make_deepfool(*, norm='l2', eps=0.5, steps=50, overshoot=0.02, num_candidates=10,
                  restarts=1):
  """Builds `attack(logits_fn, x, y, key) -> x_adv` (deterministic; key unused).

  `num_candidates`: how many top classes (by clean logits, true class excluded) are linearised.
  """
  del restarts

  def attack(logits_fn, x, y, key):
    del key
    num_classes = jax.eval_shape(logits_fn, x).shape[-1]
    k = min(num_candidates, num_classes - 1)
    clean = logits_fn(x)
    masked = jnp.where(jax.nn.one_hot(y, num_classes) > 0, -jnp.inf, clean)
    candidates = jax.lax.top_k(masked, k)[1]                               # [B,k]
    bshape = (-1,) + (1,) * (x.ndim - 1)

    def diffs(xa):
      z = logits_fn(xa)
      zy = jnp.take_along_axis(z, y[:, None], 1)
      zk = jnp.take_along_axis(z, candidates, 1)
      return zk - zy, z                                                    # [B,k]

    def body(_, carry):
      r_tot, done = carry
      xa = jnp.clip(x + (1 + overshoot) * r_tot, 0, 1)
      f, vjp_fn, z = jax.vjp(diffs, xa, has_aux=True)
      # Gradient of each f_k w.r.t. the input: one backward pass per candidate class.
      cotangents = jnp.broadcast_to(jnp.eye(k)[:, None, :], (k,) + f.shape)   # [k,B,k]
      grads = jax.vmap(lambda c: vjp_fn(c)[0])(cotangents)                   # [k,B,H,W,C]
      grads = jnp.moveaxis(grads, 0, 1)                                      # [B,k,H,W,C]
      flat = grads.reshape(grads.shape[0], k, -1)                          # [B,k,D]
      dual = jnp.sum(jnp.abs(flat), -1) if norm == 'linf' else jnp.linalg.norm(flat, axis=-1)
      dist = jnp.abs(f) / (dual + 1e-12)                                   # [B,k]
      j = jnp.argmin(dist, -1)
      fj = jnp.take_along_axis(f, j[:, None], 1)[:, 0]
      wj = jnp.take_along_axis(grads, j.reshape((-1, 1) + (1,) * (x.ndim - 1)), 1)[:, 0]
      dj = jnp.take_along_axis(dual, j[:, None], 1)[:, 0]
      if norm == 'linf':
        step = ((jnp.abs(fj) + 1e-4) / (dj + 1e-12)).reshape(bshape) * jnp.sign(wj)
      else:
        step = ((jnp.abs(fj) + 1e-4) / (dj ** 2 + 1e-12)).reshape(bshape) * wj
      done = done | (jnp.argmax(z, -1) != y)
      r_tot = jnp.where(done.reshape(bshape), r_tot, r_tot + step)
      return r_tot, done

    r_tot, _ = jax.lax.fori_loop(0, steps, body, (jnp.zeros_like(x), jnp.zeros(x.shape[:1], bool)))
    x_adv = jnp.clip(x + (1 + overshoot) * r_tot, 0, 1)
    ok = (threat.distance(x_adv, x, norm) <= eps) & (jnp.argmax(logits_fn(x_adv), -1) != y)
    return jax.lax.stop_gradient(jnp.where(ok.reshape(bshape), x_adv, x))

  return attack
