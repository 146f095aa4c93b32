"""Auto-PGD (Croce & Hein 2020, ICML, algorithm 1): APGD-CE, APGD-DLR and targeted APGD-DLR.

    attack = make_apgd(norm='linf', eps=8 / 255, steps=100, loss='ce')        # apgd_ce
    attack = make_apgd_targeted(norm='linf', eps=8 / 255, num_targets=9)      # apgd_t
    x_adv = jax.jit(attack, static_argnums=0)(logits_fn, x, y, jax.random.key(0))

APGD needs no step size: each example starts with step 2 eps, moves with momentum 0.75, and at the
checkpoints `checkpoints(steps)` halves its own step size and restarts from its best point when
the loss went up in at most a fraction `rho` of the steps since the last checkpoint
(condition 1), or when neither its step size nor its best loss changed since then (condition 2).
The step loop is one `lax.fori_loop`; the checkpoint schedule is a static boolean array indexed
by the iteration. Restarts run under `vmap`; the targets of `make_apgd_targeted` run one after
another (stages, see stages.py), so memory stays that of one targeted run (times `restarts`), and
an evaluation runs each target only on the examples no earlier target fooled.
"""

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.attacks import objectives
from robust_jax.attacks import pgd
from robust_jax.attacks import stages
from robust_jax.attacks import threat

DEFAULTS = {
    'apgd_ce': dict(norm='linf', eps=0.0, steps=100, restarts=1, loss='ce', rho=0.75,
                    seed_start=True),
    'apgd_t': dict(norm='linf', eps=0.0, steps=100, restarts=1, num_targets=9, rho=0.75),
}
_MOMENTUM = 0.75
_TINY = 1e-12


def dlr(logits, onehot):
  """Difference of Logits Ratio: -(z_y - max_{i!=y} z_i) / (z_pi1 - z_pi3 + 1e-12).

  Args:
    logits: f32[B,K] with K >= 3; pi sorts each row in descending order.
    onehot: f32[B,K] one-hot true labels.
  Returns:
    f32[B], > 0 exactly when misclassified; invariant to shifting and positive scaling of logits.
  """
  top = jax.lax.top_k(logits, 3)[0]
  true_logit = jnp.sum(onehot * logits, axis=-1)
  other = jnp.max(jnp.where(onehot > 0, -jnp.inf, logits), axis=-1)
  return -(true_logit - other) / (top[:, 0] - top[:, 2] + _TINY)


def dlr_targeted(logits, onehot, target_onehot):
  """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12).

  Args:
    logits: f32[B,K] with K >= 4.
    onehot: f32[B,K] one-hot true labels.
    target_onehot: f32[B,K] one-hot target labels (different from the true ones).
  Returns:
    f32[B], > 0 when the target's logit beats the true one.
  """
  top = jax.lax.top_k(logits, 4)[0]
  diff = jnp.sum((onehot - target_onehot) * logits, axis=-1)
  return -diff / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


LOSSES = {'ce': objectives.cross_entropy, 'dlr': dlr}
_MIN_CLASSES = {'ce': 2, 'dlr': 3}


def checkpoints(steps):
  """Checkpoints [w_0=0, w_1, ...] (ints <= steps, increasing): w_j = ceil(p_j * steps).

  p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), for p_j <= 1, in exact
  integer hundredths (0.22 * 100 is 22.000000000000004 in floats). steps=100 gives
  [0, 22, 41, 57, 70, 80, 87, 93, 99].
  """
  ps = [0, 22]
  while ps[-1] + max(ps[-1] - ps[-2] - 3, 6) <= 100:
    ps.append(ps[-1] + max(ps[-1] - ps[-2] - 3, 6))
  return sorted({-(-p * steps // 100) for p in ps})


def check_schedule(steps):
  """(bool[steps], f32[steps]): does iteration i (making x^(i+1)) end at a checkpoint, and the
  number of iterations since the previous checkpoint there (0 elsewhere)."""
  ws = checkpoints(steps)
  is_check = np.zeros(steps, bool)
  since = np.zeros(steps, np.float32)
  for prev, w in zip(ws[:-1], ws[1:]):
    is_check[w - 1] = True
    since[w - 1] = w - prev
  return is_check, since


def _where(cond, a, b):
  return jnp.where(cond.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


def _surface_start(keys, x, norm, eps):
  """A random point on the ball's surface around x (as the authors' code), clipped to [0,1]."""
  delta = threat.random_start(keys, x.shape, norm, eps)
  size = threat.distance(delta, jnp.zeros_like(delta), norm)
  delta = delta * (eps / (size + _TINY)).reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.clip(x + delta, 0.0, 1.0)


def _run(logits_fn, x, y, x0, loss_fn, *, norm, eps, steps, rho, trace=False):
  """One APGD run from x0: f32[B,...] -> (x_best, mis, loss), strongest point per example.

  trace=True also returns what the schedule decided, for tests (the run itself is unchanged):
  a dict of `x`, `loss`, `mis` ([steps + 1, B, ...]: the iterates x^(0) = x0, ..., x^(steps)
  before any restart, their loss and misclassification) and `start`, `eta` ([steps, B, ...]: the
  point iteration i steps from, x^(i) or after a halving the best point, and its step size).
  """
  is_check, since = check_schedule(steps)
  bshape = (-1,) + (1,) * (x.ndim - 1)
  project = lambda v: jnp.clip(x + threat.project(v - x, norm, eps), 0.0, 1.0)

  def objective(xa):
    logits = logits_fn(xa)
    per_example = loss_fn(logits)
    return jnp.sum(per_example), (per_example, jnp.argmax(logits, -1) != y)

  grad_fn = jax.grad(objective, has_aux=True)
  g0, (l0, mis0) = grad_fn(x0)
  eta0 = jnp.full(x.shape[:1], 2.0, jnp.float32) * eps
  state = dict(x=x0, x_prev=x0, g=g0, loss=l0, eta=eta0,
               x_max=x0, g_max=g0, loss_max=l0,                          # algorithm's best
               n_up=jnp.zeros_like(l0), loss_max_check=l0,
               halved=jnp.ones_like(mis0),  # as in the authors' code: no condition 2 at w_1
               x_ret=x0, mis_ret=mis0, loss_ret=l0)                       # returned best
  if trace:
    history = lambda v, n: jnp.zeros((n,) + v.shape, v.dtype).at[0].set(v)
    state['trace'] = dict(x=history(x0, steps + 1), loss=history(l0, steps + 1),
                          mis=history(mis0, steps + 1), start=history(x0, steps),
                          eta=history(eta0, steps))

  def body(i, s):
    a = jnp.where(i == 0, 1.0, _MOMENTUM)
    z = project(s['x'] + s['eta'].reshape(bshape) * threat.ascent_direction(s['g'], norm))
    x_new = project(s['x'] + a * (z - s['x']) + (1 - a) * (s['x'] - s['x_prev']))
    g, (loss, mis) = grad_fn(x_new)
    n_up = s['n_up'] + (loss > s['loss'])
    up = loss > s['loss_max']
    x_max, g_max = _where(up, x_new, s['x_max']), _where(up, g, s['g_max'])
    loss_max = jnp.where(up, loss, s['loss_max'])
    better = pgd.stronger(mis, loss, s['mis_ret'], s['loss_ret'])
    # Checkpoint: condition 1 (too few increases) or 2 (step and best loss both unchanged).
    check = jnp.asarray(is_check)[i]
    cond1 = n_up <= rho * jnp.asarray(since)[i]  # `<=` as in the authors' code
    cond2 = ~s['halved'] & (loss_max <= s['loss_max_check'])
    halve = check & (cond1 | cond2)
    out = dict(
        x=_where(halve, x_max, x_new), x_prev=s['x'], g=_where(halve, g_max, g),
        loss=jnp.where(halve, loss_max, loss), eta=jnp.where(halve, s['eta'] / 2, s['eta']),
        x_max=x_max, g_max=g_max, loss_max=loss_max,
        n_up=jnp.where(check, 0.0, n_up),
        loss_max_check=jnp.where(check, loss_max, s['loss_max_check']),
        halved=jnp.where(check, halve, s['halved']),
        x_ret=_where(better, x_new, s['x_ret']), mis_ret=s['mis_ret'] | mis,
        loss_ret=jnp.where(better, loss, s['loss_ret']))
    if trace:
      t = s['trace']
      out['trace'] = dict(x=t['x'].at[i + 1].set(x_new), loss=t['loss'].at[i + 1].set(loss),
                          mis=t['mis'].at[i + 1].set(mis), start=t['start'].at[i].set(s['x']),
                          eta=t['eta'].at[i].set(s['eta']))
    return out

  s = jax.lax.fori_loop(0, steps, body, state)
  if trace:
    return s['x_ret'], s['mis_ret'], s['loss_ret'], s['trace']
  return s['x_ret'], s['mis_ret'], s['loss_ret']


def _strongest(xs, mis, losses):
  """Reduces a leading axis [R,B,...] to each example's strongest (misclassified, then loss)."""
  def pick(best, cand):
    better = pgd.stronger(cand[1], cand[2], best[1], best[2])
    return tuple(_where(better, c, b) for c, b in zip(cand, best)), None

  best, _ = jax.lax.scan(pick, (xs[0], mis[0], losses[0]), (xs[1:], mis[1:], losses[1:]))
  return best


def _with_restarts(run, keys, restarts):
  """Runs `run(keys[B]) -> (x, mis, loss)` for `restarts` per-example key splits, vmapped: restart
  r runs with `pgd.restart_keys(keys, restarts)[r]`."""
  restart_keys = pgd.restart_keys(keys, restarts)  # [R,B]
  if restarts == 1:
    return run(restart_keys[0])
  return _strongest(*jax.vmap(run)(restart_keys))


def _check_args(norm, steps, restarts):
  if norm not in threat.NORMS:
    raise ValueError(f'Unknown norm {norm!r}; valid: {threat.NORMS}.')
  for name, v in (('steps', steps), ('restarts', restarts)):
    if not isinstance(v, int) or v < 1:
      raise ValueError(f'{name}={v!r} must be an integer >= 1.')


def make_apgd(*, norm='linf', eps, steps=100, restarts=1, loss='ce', rho=0.75, seed_start=True):
  """Builds untargeted APGD `attack(logits_fn, x, y, key) -> x_adv` (config name 'apgd_ce').

  Args:
    norm: 'linf' or 'l2' (l2 steps along the normalised gradient, as the authors' code).
    eps: radius of the threat model, in [0,1] pixel scale.
    steps: iterations N (N + 1 gradient evaluations).
    restarts: independent random starts, vmapped; the strongest per example is kept.
    loss: 'ce' (APGD-CE) or 'dlr' (APGD-DLR, needs >= 3 classes), maximised.
    rho: condition 1 halves the step when the loss rose in at most rho of the iterations since
      the last checkpoint.
    seed_start: start from a random point on the ball's surface drawn from each example's key
      (the authors' start); False starts every restart from x itself.

  Returns:
    attack(logits_fn, x, y, key): `logits_fn` maps f32[B,H,W,C] in [0,1] to f32[B,K] logits,
    `x: f32[B,H,W,C]` in [0,1], `y: int[B]`, `key` one PRNG key or one per example ([B]). Returns
    f32[B,H,W,C] inside the ball around x and inside [0,1], with gradients stopped: per example
    the misclassified point of highest loss seen, else the point of highest loss.
  """
  _check_args(norm, steps, restarts)
  if loss not in LOSSES:
    raise ValueError(f'Unknown APGD loss {loss!r}; valid: {sorted(LOSSES)}.')

  def attack(logits_fn, x, y, key):
    num_classes = jax.eval_shape(logits_fn, x).shape[-1]
    if num_classes < _MIN_CLASSES[loss]:
      raise ValueError(f'APGD loss {loss!r} needs >= {_MIN_CLASSES[loss]} classes.')
    onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    loss_fn = lambda logits: LOSSES[loss](logits, onehot)

    def run(keys):
      x0 = _surface_start(keys, x, norm, eps) if seed_start else x
      return _run(logits_fn, x, y, x0, loss_fn, norm=norm, eps=eps, steps=steps, rho=rho)

    x_adv = _with_restarts(run, pgd.per_example_keys(key, x.shape[0]), restarts)[0]
    return jax.lax.stop_gradient(x_adv)

  return attack


def make_apgd_targeted(*, norm='linf', eps, steps=100, restarts=1, num_targets=9, rho=0.75):
  """Builds AutoAttack's targeted APGD-DLR `attack(logits_fn, x, y, key) -> x_adv` ('apgd_t').

  For each of the `num_targets` (clipped to K - 1) classes other than y with the largest clean
  logits, runs APGD maximising `dlr_targeted`, from a random start on the ball's surface. The
  targets run one after another (the stages of `make_apgd_staged`; memory of one run, not of
  num_targets runs); per example the result is the strongest over the clean x and all targets:
  misclassified first, then larger untargeted `dlr`. Needs K >= 4 classes. Arguments and the
  returned attack are as in `make_apgd`; the key of target t is `fold_in(key_b, t)` per example.
  """
  return stages.as_attack(make_apgd_staged(norm=norm, eps=eps, steps=steps, restarts=restarts,
                                           num_targets=num_targets, rho=rho))


def make_apgd_staged(*, norm='linf', eps, steps=100, restarts=1, num_targets=9, rho=0.75):
  """`make_apgd_targeted` as a `stages.Staged`: stage t attacks the t-th most likely other class;
  the carry is the strongest point so far with whether it is misclassified and its untargeted
  `dlr` (x[B,...], bool[B], f32[B]); an example is done once misclassified."""
  _check_args(norm, steps, restarts)
  if not isinstance(num_targets, int) or num_targets < 1:
    raise ValueError(f'num_targets={num_targets!r} must be an integer >= 1.')

  def setup(logits_fn, x):
    clean = logits_fn(x)
    if clean.shape[-1] < 4:
      raise ValueError(f'Targeted APGD-DLR needs >= 4 classes, got {clean.shape[-1]}.')
    return clean, clean.shape[-1]

  def score(xa, logits, y, onehot):
    return xa, jnp.argmax(logits, -1) != y, dlr(logits, onehot)

  def init(logits_fn, x, y, keys):
    del keys
    clean, num_classes = setup(logits_fn, x)
    return score(x, clean, y, jax.nn.one_hot(y, num_classes, dtype=jnp.float32))

  def stage(logits_fn, x, y, keys, best, t):
    clean, num_classes = setup(logits_fn, x)
    onehot = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    targets = jax.lax.top_k(jnp.where(onehot > 0, -jnp.inf, clean),
                            min(num_targets, num_classes - 1))[1]
    target_onehot = jax.nn.one_hot(jnp.take(targets, t, axis=1), num_classes, dtype=jnp.float32)
    loss_fn = lambda logits: dlr_targeted(logits, onehot, target_onehot)

    def run(run_keys):
      x0 = _surface_start(run_keys, x, norm, eps)
      return _run(logits_fn, x, y, x0, loss_fn, norm=norm, eps=eps, steps=steps, rho=rho)

    t_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, t)
    x_t = _with_restarts(run, t_keys, restarts)[0]
    cand = score(x_t, logits_fn(x_t), y, onehot)
    better = pgd.stronger(cand[1], cand[2], best[1], best[2])
    return tuple(_where(better, c, b) for c, b in zip(cand, best))

  return stages.Staged(lambda k: min(num_targets, k - 1), init, stage, lambda c: c[1],
                       lambda logits_fn, x, y, keys, c: c[0])
