"""Targeted Fast Adaptive Boundary attack, FAB-T (Croce & Hein 2020), for any JAX function.

    attack = make_fab_targeted(norm='linf', eps=8 / 255, steps=100, num_targets=9)
    x_adv = jax.jit(attack, static_argnums=0)(logits_fn, x, y, jax.random.key(0))

FAB looks for the smallest adversarial perturbation. For each of the `num_targets` most likely
classes other than the true one it linearises the boundary between the true class and the target
at the current iterate, projects both the iterate and the original point onto that hyperplane
inside the box [0,1], steps to a convex combination of the two (biased towards the original point
by at most `alpha_max`, with overshoot `eta`), and, whenever the iterate is adversarial, records it
if it is the smallest so far and pulls it back towards the original point by `beta`.

Runs (target x restart) are the stages of `make_fab_staged` (see stages.py), run one after another,
so a restart can start within half the smallest norm found so far (capped at eps/2); the step loop
is a `lax.fori_loop`. An evaluation runs each run only on the examples not yet fooled within eps.
Robust accuracy is measured at radius eps, so each example gets its smallest adversarial example if
that is within eps, else x itself.

The projections onto a hyperplane intersected with the box are exact and sort-free: a water-filling
(L-inf, L2) or knapsack (L1) problem whose breakpoint is found by bisection on float32 bit patterns
(32 passes over the D coordinates), then the linear piece through it solved in closed form; see
`project_hyperplane`.
"""

import functools

import jax
import jax.numpy as jnp

from robust_jax.attacks import stages

NORMS = ('linf', 'l2', 'l1')
DEFAULTS = {'fab_t': dict(norm='linf', eps=0.0, steps=100, restarts=1, num_targets=9,
                          alpha_max=0.1, eta=1.05, beta=0.9)}
_TINY = 1e-12


def lp_norm(v, norm):
  """The `norm` of `v: f32[..., D]` over its last axis, f32[...]."""
  if norm == 'linf':
    return jnp.max(jnp.abs(v), axis=-1)
  if norm == 'l2':
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=-1))
  if norm == 'l1':
    return jnp.sum(jnp.abs(v), axis=-1)
  raise ValueError(f'Unknown norm {norm!r}; valid: {NORMS}.')


_BISECTIONS = 32  # halvings of [0, 2^31) float32 bit patterns: down to adjacent floats


def _last_true(pred, hi):
  """The largest float32 s in [0, hi] with pred(s), by bisection on the bit patterns.

  pred: f32[] -> bool[], true on [0, s*] and false above (true at 0); hi: f32[] >= 0. Non-negative
  float32s are ordered like their int32 bit patterns, so 32 halvings of [0, bits(hi) + 1) end at
  the exact s* (or hi). Each halving evaluates pred once (O(D) element-wise work): no sort, which
  XLA's CPU backend runs as a slow comparator sort.
  """
  def halve(_, bounds):
    lo, hi = bounds  # pred(lo) holds; pred fails at hi, or hi is past the range
    mid = lo + (hi - lo) // 2
    ok = pred(jax.lax.bitcast_convert_type(mid, jnp.float32))
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  end = jax.lax.bitcast_convert_type(jnp.maximum(hi, 0.0), jnp.int32) + 1
  lo, _ = jax.lax.fori_loop(0, _BISECTIONS, halve, (jnp.int32(0), end))
  return jax.lax.bitcast_convert_type(lo, jnp.float32)


def _water_level(weight, cap, need):
  """Smallest s >= 0 with sum_i weight_i * min(s, cap_i) >= need, or inf if there is none.

  weight, cap: f32[D] >= 0; need: f32[] >= 0. The left side F(s) is piecewise linear and
  non-decreasing in s with kinks at the caps. Bisection (`_last_true`) finds the last float lo
  with F(lo) < need; the caps <= lo are then exactly those saturated at the level, and the linear
  piece through them is solved in closed form (the same piece a sort of the caps would pick).
  """
  total = jnp.sum(weight * cap)
  lo = _last_true(lambda s: jnp.sum(weight * jnp.minimum(s, cap)) < need, jnp.max(cap))
  full = cap <= lo
  below_wc = jnp.sum(jnp.where(full, weight * cap, 0.0))
  free_w = jnp.sum(jnp.where(full, 0.0, weight))
  level = (need - below_wc) / jnp.maximum(free_w, _TINY)
  level = jnp.where(need > 0, jnp.maximum(level, 0.0), 0.0)
  return jnp.where(total < need, jnp.inf, level)


def _knapsack(mag, cap, need):
  """Fractional knapsack: amounts a_i in [0, cap_i] filling coordinates in decreasing mag (ties
  by index) until sum_i mag_i a_i reaches need; all at their caps if it never does. f32[D].

  The last coordinate filled has the largest magnitude m with G(m) = sum_{mag_i >= m} mag_i cap_i
  >= need (bisection, `_last_true`); larger ones fill to their caps and the ties at m share the
  rest in index order.
  """
  total = jnp.sum(mag * cap)
  m = _last_true(lambda v: jnp.sum(jnp.where(mag >= v, mag * cap, 0.0)) >= need, jnp.max(mag))
  full = mag > m
  tied = jnp.where(mag == m, mag * cap, 0.0)
  rest = need - jnp.sum(jnp.where(full, mag * cap, 0.0)) - (jnp.cumsum(tied) - tied)
  amount = jnp.where(full, cap, jnp.where(mag == m, jnp.clip(rest / jnp.maximum(m, _TINY), 0.0,
                                                                cap), 0.0))
  return jnp.where(total < need, cap, amount)


def project_hyperplane(t, w, b, norm):
  """The minimal-`norm` step d with w.(t + d) = b and t + d in [0,1]^D, for one example.

  Args:
    t: f32[D] in [0,1], the point to project.
    w, b: f32[D] and f32[], the hyperplane {z : w.z = b}.
    norm: 'linf', 'l2' or 'l1'.
  Returns:
    f32[D]. If the box does not meet the hyperplane, the box corner closest to it (every coordinate
    moved as far as it can towards the hyperplane), as in the paper.

  With need = b - w.t made >= 0 by flipping w, coordinate i moves in direction sign(w_i) by at most
  cap_i (to the box edge). L-inf: d_i = sign(w_i) min(s, cap_i), the smallest s that reaches the
  plane. L2 (KKT): d_i = clip(lambda w_i) = w_i min(lambda, cap_i / |w_i|). L1 (fractional
  knapsack): fill coordinates in decreasing |w_i| up to their caps.
  """
  need = b - jnp.dot(w, t)
  w = jnp.where(need < 0, -w, w)
  need = jnp.abs(need)
  mag = jnp.abs(w)
  cap = jnp.where(w > 0, 1.0 - t, jnp.where(w < 0, t, 0.0))
  if norm == 'linf':
    return jnp.sign(w) * jnp.minimum(_water_level(mag, cap, need), cap)
  if norm == 'l2':
    live = mag > _TINY
    ratio = jnp.where(live, cap / jnp.where(live, mag, 1.0), 0.0)
    return jnp.where(live, w, 0.0) * jnp.minimum(_water_level(w * w, ratio, need), ratio)
  if norm == 'l1':
    return jnp.sign(w) * _knapsack(mag, cap, need)
  raise ValueError(f'Unknown norm {norm!r}; valid: {NORMS}.')


def fab_step(x1, x0, diff, grad, norm, alpha_max, eta):
  """One FAB step from `x1` for the linearised boundary diff + grad.(z - x1) = 0.

  x1, x0, grad: f32[B,D] (iterate, original point, gradient of diff at x1); diff: f32[B].
  Returns the next iterate, f32[B,D] in [0,1].
  """
  b = jnp.sum(grad * x1, axis=-1) - diff
  project = jax.vmap(functools.partial(project_hyperplane, norm=norm))
  both = project(jnp.concatenate([x1, x0]), jnp.concatenate([grad, grad]),
                 jnp.concatenate([b, b]))
  d1, d0 = jnp.split(both, 2)
  n1 = jnp.maximum(lp_norm(d1, norm), 1e-8)
  n0 = jnp.maximum(lp_norm(d0, norm), 1e-8)
  alpha = jnp.clip(n1 / (n1 + n0), 0.0, alpha_max)[:, None]
  return jnp.clip((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d0) * alpha, 0.0, 1.0)


def unit_sphere(keys, dim, norm):
  """A random point of the unit `norm` sphere per key: f32[B,D] (L-inf from a uniform cube,
  L2 and L1 from a Gaussian, as in the authors' code)."""
  def one(k):
    if norm == 'linf':
      v = jax.random.uniform(k, (dim,), minval=-1.0, maxval=1.0)
    else:
      v = jax.random.normal(k, (dim,))
    return v / jnp.maximum(lp_norm(v, norm), _TINY)
  return jax.vmap(one)(keys)


def make_fab_targeted(*, norm='linf', eps, steps=100, restarts=1, num_targets=9,
                      alpha_max=0.1, eta=1.05, beta=0.9):
  """Builds `attack(logits_fn, x, y, key) -> x_adv` for targeted FAB (FAB-T in AutoAttack).

  Args:
    norm: 'linf', 'l2' or 'l1'.
    eps: radius at which the result counts, in [0,1] pixel scale; also caps random starts.
    steps: FAB steps per run (each: one gradient and one extra forward pass).
    restarts: runs per target; the first starts at x, the others on the sphere of radius
      min(smallest norm found so far, eps) / 2 around x.
    num_targets: target classes, the most likely ones other than y by clean logits (clipped to
      num_classes - 1).
    alpha_max, eta, beta: maximal bias towards x, overshoot, backward step (the paper's values).

  Returns:
    attack(logits_fn, x, y, key): `logits_fn` maps f32[B,H,W,C] in [0,1] to f32[B,K] logits,
    `x: f32[B,H,W,C]` in [0,1], `y: int[B]`, `key` one PRNG key or one per example ([B]).
    Returns f32[B,H,W,C]: per example, the smallest adversarial example found if its distance to x
    is <= eps, else x (also x for points misclassified from the start); gradients stopped.
  """
  return stages.as_attack(make_fab_staged(norm=norm, eps=eps, steps=steps, restarts=restarts,
                                          num_targets=num_targets, alpha_max=alpha_max, eta=eta,
                                          beta=beta))


def make_fab_staged(*, norm='linf', eps, steps=100, restarts=1, num_targets=9, alpha_max=0.1,
                    eta=1.05, beta=0.9):
  """`make_fab_targeted` as a `stages.Staged`: stage i is run i (target i // restarts, restart
  i % restarts); the carry is (smallest adversarial point found f32[B,D], its norm f32[B] (inf:
  none), clean-correct bool[B]); an example is done once its smallest norm is <= eps."""
  if norm not in NORMS:
    raise ValueError(f'Unknown norm {norm!r}; valid: {NORMS}.')

  def num_runs(num_classes):
    return max(min(num_targets, num_classes - 1), 0) * restarts

  def init(logits_fn, x, y, keys):
    del keys
    batch = x.shape[0]
    correct = jnp.argmax(logits_fn(x), -1) == y
    return x.reshape(batch, -1), jnp.full((batch,), jnp.inf, jnp.float32), correct

  def stage(logits_fn, x, y, keys, carry, i):
    shape, batch = x.shape, x.shape[0]
    best_x, best_norm, correct = carry
    x0 = x.reshape(batch, -1)
    flat_logits = lambda v: logits_fn(v.reshape(shape))
    clean = logits_fn(x)
    num_classes = clean.shape[-1]
    onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    targets = jax.lax.top_k(jnp.where(onehot > 0, -jnp.inf, clean), num_runs(num_classes)
                            // restarts)[1]
    target = jnp.take(targets, i // restarts, axis=1)
    coeff = onehot - jax.nn.one_hot(target, num_classes, dtype=jnp.float32)

    def true_minus_target(v):
      diff = jnp.sum(coeff * flat_logits(v), axis=-1)
      return jnp.sum(diff), diff

    grad_fn = jax.grad(true_minus_target, has_aux=True)
    x1 = x0
    if restarts > 1:
      radius = jnp.where(i % restarts > 0, jnp.minimum(best_norm, eps) / 2, 0.0)
      run_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
      x1 = jnp.clip(x0 + radius[:, None] * unit_sphere(run_keys, x0.shape[1], norm), 0.0, 1.0)

    def body(_, c):
      x1, best_x, best_norm = c
      grad, diff = grad_fn(x1)
      x1 = fab_step(x1, x0, diff, grad, norm, alpha_max, eta)
      adv = jnp.argmax(flat_logits(x1), -1) != y
      dist = lp_norm(x1 - x0, norm)
      better = adv & (dist < best_norm)
      best_x = jnp.where(better[:, None], x1, best_x)
      best_norm = jnp.where(better, dist, best_norm)
      x1 = jnp.where(adv[:, None], x0 + beta * (x1 - x0), x1)
      return x1, best_x, best_norm

    _, best_x, best_norm = jax.lax.fori_loop(0, steps, body, (x1, best_x, best_norm))
    return best_x, best_norm, correct

  def done(carry):
    _, best_norm, correct = carry
    return ~correct | (best_norm <= eps)

  def finish(logits_fn, x, y, keys, carry):
    del logits_fn, y, keys
    best_x, best_norm, correct = carry
    found = correct & (best_norm <= eps)
    return jnp.where(found[:, None], best_x, x.reshape(x.shape[0], -1)).reshape(x.shape)

  return stages.Staged(num_runs, init, stage, done, finish)
