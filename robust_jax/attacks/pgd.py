"""Projected gradient descent (Madry et al. 2018) and FGSM, for any JAX function.

    attack = make_pgd(norm='linf', eps=0.1, steps=40, step_size=0.01, restarts=2)
    x_adv = jax.jit(attack, static_argnums=0)(logits_fn, x, y, jax.random.key(0))

The step loop is a `lax.fori_loop` (compiled once, whatever the number of steps); restarts run
under `vmap` and each example keeps its strongest result: misclassified beats correct, then higher
loss wins.
"""

import jax
import jax.numpy as jnp

from robust_jax.attacks import objectives
from robust_jax.attacks import threat


def per_example_keys(key, batch_size):
  """A PRNG key per example: `key` is one key (split) or already a batch of `batch_size` keys."""
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  if not typed:
    key = jax.random.wrap_key_data(key)
  if key.shape == ():
    return jax.random.split(key, batch_size)
  if key.shape != (batch_size,):
    raise ValueError(f'Expected one key or {batch_size} keys, got key shape {key.shape}.')
  return key


def stronger(mis_a, loss_a, mis_b, loss_b):
  """bool[B]: is result a stronger than b (misclassified first, then larger loss)?"""
  return (mis_a & ~mis_b) | ((mis_a == mis_b) & (loss_a > loss_b))


def _select(better, a, b):
  return jnp.where(better.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


def restart_keys(keys, restarts):
  """[R,B] keys from per-example keys [B]: restart r of example b runs with split(keys[b], R)[r]."""
  return jax.vmap(lambda k: jax.random.split(k, restarts))(keys).T


def make_pgd_run(*, norm='linf', eps=0.1, steps=10, step_size=0.01, random_start=True, loss='ce',
                 track_best=True):
  """One restart of `make_pgd` (same arguments, less `restarts`).

  Returns:
    run(logits_fn, x, y, run_keys) -> (x_adv, mis, loss): `run_keys` one PRNG key per example
    ([B], e.g. a row of `restart_keys`), the result x_adv: f32[B,H,W,C] (gradients not stopped),
    whether it is misclassified (bool[B]) and its loss (f32[B]). `make_pgd(restarts=R)` keeps,
    per example, the strongest of `run(..., restart_keys(keys, R)[r])` over r. With
    track_best=False, `with_status=False` skips the last forward pass: (x_adv, None, None).
  """
  loss_fn = objectives.get(loss)

  def run(logits_fn, x, y, run_keys, with_status=True):
    batch = x.shape[0]
    num_classes = jax.eval_shape(logits_fn, x).shape[-1]
    onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)

    def objective(xa):
      logits = logits_fn(xa)
      per_example = loss_fn(logits, onehot)
      return jnp.sum(per_example), (per_example, logits)

    grad_fn = jax.grad(objective, has_aux=True)

    def status(xa):
      _, (per_example, logits) = objective(xa)
      return jnp.argmax(logits, -1) != y, per_example

    if random_start:
      x0 = jnp.clip(x + threat.random_start(run_keys, x.shape, norm, eps), 0.0, 1.0)
    else:
      x0 = x
    neg_inf = jnp.full((batch,), -jnp.inf, jnp.float32)
    best0 = (x0, jnp.zeros((batch,), bool), neg_inf)

    def body(_, carry):
      xa, best = carry
      grad, (per_example, logits) = grad_fn(xa)
      if track_best:
        mis = jnp.argmax(logits, -1) != y
        better = stronger(mis, per_example, best[1], best[2])
        best = (_select(better, xa, best[0]), best[1] | mis,
                jnp.where(better, per_example, best[2]))
      xa = xa + step_size * threat.ascent_direction(grad, norm)
      xa = jnp.clip(x + threat.project(xa - x, norm, eps), 0.0, 1.0)
      return xa, best

    xa, best = jax.lax.fori_loop(0, steps, body, (x0, best0))
    if not track_best and not with_status:
      return xa, None, None
    mis, per_example = status(xa)
    if not track_best:
      return xa, mis, per_example
    better = stronger(mis, per_example, best[1], best[2])
    return (_select(better, xa, best[0]), mis | best[1],
            jnp.where(better, per_example, best[2]))

  return run


def make_pgd(*, norm='linf', eps=0.1, steps=10, step_size=0.01, restarts=1,
             random_start=True, loss='ce', track_best=True):
  """Builds `attack(logits_fn, x, y, key) -> x_adv`.

  Args:
    norm: 'linf' or 'l2'.
    eps: radius of the threat model, in [0,1] pixel scale.
    steps: gradient steps (1 with random_start=False is FGSM / FGM).
    step_size: step length in the norm's unit.
    restarts: independent random restarts, run vmapped; the strongest per example is kept.
      Restart r of example b is `make_pgd_run(...)` with key `restart_keys(keys, restarts)[r, b]`.
    random_start: start from a uniform sample of the ball instead of x.
    loss: 'ce' or 'margin', maximised.
    track_best: keep each example's strongest iterate instead of the last one (costs one more
      forward pass); evaluation wants it, adversarial training (Madry) uses the last iterate.

  Returns:
    attack(logits_fn, x, y, key): `logits_fn` maps f32[B,H,W,C] in [0,1] to f32[B,K] logits,
    `x: f32[B,H,W,C]` in [0,1], `y: int[B]`, `key` one PRNG key or one per example ([B]; makes
    the result independent of how a batch is split across devices). Returns f32[B,H,W,C] inside
    the ball around x and inside [0,1], with gradients stopped.
  """
  run = make_pgd_run(norm=norm, eps=eps, steps=steps, step_size=step_size,
                     random_start=random_start, loss=loss, track_best=track_best)

  def attack(logits_fn, x, y, key):
    keys = restart_keys(per_example_keys(key, x.shape[0]), restarts)  # [R,B]
    if restarts == 1:
      x_adv = run(logits_fn, x, y, keys[0], with_status=False)[0]
    else:
      xs, mis, losses = jax.vmap(lambda k: run(logits_fn, x, y, k))(keys)
      x_adv, best_mis, best_loss = xs[0], mis[0], losses[0]
      for r in range(1, restarts):
        better = stronger(mis[r], losses[r], best_mis, best_loss)
        x_adv = _select(better, xs[r], x_adv)
        best_mis = best_mis | mis[r]
        best_loss = jnp.where(better, losses[r], best_loss)
    return jax.lax.stop_gradient(x_adv)

  return attack
