"""APGD: invariants, checkpoints, the step-size rule and restarts on traced runs, DLR losses, and
strength against PGD on small models."""

import collections
import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.attacks import apgd
from robust_jax.attacks import pgd
from robust_jax.attacks import threat

_W = jax.random.normal(jax.random.key(1), (3 * 3 * 2, 5))
_W1 = jax.random.normal(jax.random.key(2), (8 * 8, 32)) / 4.0
_W2 = jax.random.normal(jax.random.key(3), (32, 10))


def linear_logits(x):
  """A fixed linear model on 3x3x2 images with 5 classes."""
  return x.reshape(x.shape[0], -1) @ _W


def mlp_logits(x):
  """A fixed random 2-layer tanh network on 8x8x1 images with 10 classes."""
  return jnp.tanh((x.reshape(x.shape[0], -1) - 0.5) @ _W1) @ _W2


def _data(seed, batch, shape=(3, 3, 2), num_classes=5):
  x = jax.random.uniform(jax.random.key(seed), (batch,) + shape)
  y = jax.random.randint(jax.random.key(seed + 1), (batch,), 0, num_classes)
  return x, y


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _attack(logits_fn, kind, static, x, y, key, eps):
  """eps is traced, so the property tests compile once per discrete setting."""
  make = apgd.make_apgd if kind == 'apgd_ce' else apgd.make_apgd_targeted
  return make(eps=eps, **dict(static))(logits_fn, x, y, key)


def _run(kind, x, y, key, eps, logits_fn=linear_logits, **static):
  static.setdefault('steps', 5)
  return _attack(logits_fn, kind, tuple(sorted(static.items())), x, y, key, jnp.float32(eps))


_settings = st.sampled_from([
    ('apgd_ce', dict(norm='linf', loss='ce')), ('apgd_ce', dict(norm='l2', loss='dlr')),
    ('apgd_ce', dict(norm='linf', loss='dlr', restarts=2)),
    ('apgd_t', dict(norm='l2', num_targets=2)), ('apgd_t', dict(norm='linf', num_targets=2))])


@hypothesis.settings(max_examples=12, deadline=None)
@hypothesis.given(setting=_settings, eps=st.floats(0.0, 2.0), seed=st.integers(0, 2**16))
def test_stays_inside_ball_and_box(setting, eps, seed):
  kind, static = setting
  x, y = _data(seed, 4)
  x_adv = _run(kind, x, y, jax.random.key(seed), eps, **static)
  assert x_adv.shape == x.shape and x_adv.dtype == jnp.float32
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  dist = threat.distance(x_adv, x, static['norm'])
  assert float(dist.max()) <= eps * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize('kind,static', [('apgd_ce', dict(norm='linf')),
                                         ('apgd_ce', dict(norm='l2', loss='dlr')),
                                         ('apgd_t', dict(norm='l2', num_targets=2))])
def test_eps_zero_returns_x_and_same_key_same_result(kind, static):
  x, y = _data(3, 4)
  key = jax.random.key(7)
  np.testing.assert_array_equal(_run(kind, x, y, key, 0.0, **static), x)
  a, b = _run(kind, x, y, key, 0.3, **static), _run(kind, x, y, key, 0.3, **static)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, x)


@pytest.mark.parametrize('kind,static', [('apgd_ce', dict(norm='linf', restarts=2)),
                                         ('apgd_t', dict(norm='l2', num_targets=2))])
def test_per_example_keys_make_results_independent_of_batch_split(kind, static):
  x, y = _data(0, 8)
  keys = jax.random.split(jax.random.key(3), 8)
  whole = _run(kind, x, y, keys, 0.3, **static)
  halves = jnp.concatenate([_run(kind, x[:4], y[:4], keys[:4], 0.3, **static),
                            _run(kind, x[4:], y[4:], keys[4:], 0.3, **static)])
  # Equal up to float rounding: XLA:CPU may vectorise the L2 norms of a batch of 8 and of 4
  # differently (1 ulp seen on an AVX2 machine); a shared random start would differ by ~eps.
  np.testing.assert_allclose(whole, halves, rtol=0, atol=1e-6)


def test_apgd_ce_beats_pgd_and_apgd_t_beats_apgd_ce_on_mlp():
  x, _ = _data(11, 128, shape=(8, 8, 1), num_classes=10)
  y = jnp.argmax(mlp_logits(x), -1)  # start from correctly classified points
  key, eps, steps = jax.random.key(0), 0.02, 20
  acc = lambda xa: float(jnp.mean(jnp.argmax(mlp_logits(xa), -1) == y))
  pgd_attack = pgd.make_pgd(eps=eps, steps=steps, step_size=2.5 * eps / steps)
  pgd_acc = acc(jax.jit(pgd_attack, static_argnums=0)(mlp_logits, x, y, key))
  ce_acc = acc(_run('apgd_ce', x, y, key, eps, mlp_logits, steps=steps))
  t_acc = acc(_run('apgd_t', x, y, key, eps, mlp_logits, steps=steps, num_targets=3))
  assert 0.1 < pgd_acc < 0.9, pgd_acc  # the comparison is informative
  assert ce_acc <= pgd_acc + 0.02, (ce_acc, pgd_acc)
  assert t_acc <= ce_acc + 0.02, (t_acc, ce_acc)


def _paper_checkpoints(steps):
  """Croce & Hein's w_j = ceil(p_j N): p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} -
  0.03, 0.06) while <= 1."""
  p = [0.0, 0.22]
  while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1 + 1e-9:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
  return sorted({int(np.ceil(round(q * steps, 6))) for q in p})


def test_checkpoints_follow_the_paper():
  # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1): w_j = ceil(100 p_j).
  assert apgd.checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
  for n in (7, 50, 70, 100, 250):
    assert apgd.checkpoints(n) == _paper_checkpoints(n)
  is_check, since = apgd.check_schedule(100)
  assert list(np.flatnonzero(is_check) + 1) == [22, 41, 57, 70, 80, 87, 93, 99]
  assert list(since[is_check]) == [22, 19, 16, 13, 10, 7, 6, 6]
  assert apgd.checkpoints(1) == [0, 1] and apgd.check_schedule(1)[0].tolist() == [True]


def test_dlr_values_and_invariance():
  logits = jnp.array([[4.0, 2.0, 1.0, 0.0], [1.0, 3.0, 0.0, 2.0]])
  onehot = jax.nn.one_hot(jnp.array([0, 0]), 4)
  # Row 0: correct, -(4 - 2) / (4 - 1). Row 1: wrong, -(1 - 3) / (3 - 1).
  np.testing.assert_allclose(apgd.dlr(logits, onehot), [-2 / 3, 1.0], rtol=1e-6)
  target = jax.nn.one_hot(jnp.array([3, 3]), 4)
  # Row 0: -(4 - 0) / (4 - (1 + 0) / 2). Row 1: -(1 - 2) / (3 - (1 + 0) / 2).
  np.testing.assert_allclose(apgd.dlr_targeted(logits, onehot, target), [-4 / 3.5, 1 / 2.5],
                             rtol=1e-6)
  z = jax.random.normal(jax.random.key(0), (16, 7))
  oh = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (16,), 0, 7), 7)
  t = jax.nn.one_hot(jnp.argmin(z, -1), 7)
  for a, b in ((1.0, 5.0), (3.0, -2.0), (0.25, 0.0)):
    np.testing.assert_allclose(apgd.dlr(a * z + b, oh), apgd.dlr(z, oh), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(apgd.dlr_targeted(a * z + b, oh, t), apgd.dlr_targeted(z, oh, t),
                               rtol=1e-4, atol=1e-5)


def test_num_targets_is_clipped_and_bad_arguments_raise():
  x, y = _data(4, 4)
  key = jax.random.key(2)
  many = _run('apgd_t', x, y, key, 0.2, num_targets=50, steps=2)
  np.testing.assert_array_equal(many, _run('apgd_t', x, y, key, 0.2, num_targets=4, steps=2))
  for make, kwargs in ((apgd.make_apgd, dict(norm='l3')), (apgd.make_apgd, dict(loss='kl')),
                       (apgd.make_apgd, dict(steps=0)), (apgd.make_apgd_targeted,
                                                          dict(num_targets=0))):
    with pytest.raises(ValueError, match='valid|>= 1'):
      make(eps=0.1, **kwargs)
  with pytest.raises(ValueError, match='>= 4 classes'):
    apgd.make_apgd_targeted(eps=0.1)(lambda v: linear_logits(v)[:, :3], x, y, key)
  closed = jax.jit(lambda *a: apgd.make_apgd(eps=0.2, steps=2)(linear_logits, *a))(x, y, key)
  np.testing.assert_array_equal(closed, _run('apgd_ce', x, y, key, 0.2, steps=2, norm='linf'))
  assert set(apgd.DEFAULTS) == {'apgd_ce', 'apgd_t'}
  assert apgd.DEFAULTS['apgd_t']['num_targets'] == 9 and apgd.DEFAULTS['apgd_ce']['loss'] == 'ce'


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _traced(logits_fn, norm, steps, x, y, key, eps):
  """One APGD-CE run with its trace (see `apgd._run`): (x_ret, mis_ret, loss_ret, trace)."""
  onehot = jax.nn.one_hot(y, jax.eval_shape(logits_fn, x).shape[-1])
  x0 = apgd._surface_start(pgd.per_example_keys(key, x.shape[0]), x, norm, eps)
  return apgd._run(logits_fn, x, y, x0, lambda z: apgd.LOSSES['ce'](z, onehot), norm=norm,
                   eps=eps, steps=steps, rho=0.75, trace=True)


def test_step_size_halves_exactly_at_the_checkpoints_when_the_loss_never_rises():
  # Zero gradient: nothing moves (up to the rounding of the first projection), the loss never
  # rises, so condition 1 holds at every checkpoint and the step size halves right after each w_j,
  # j >= 1, and nowhere else.
  x, y = _data(0, 4)
  flat = lambda v: 0.0 * v.reshape(v.shape[0], -1)[:, :3]
  steps, eps = 70, 0.25
  for norm in ('linf', 'l2'):
    *_, tr = _traced(flat, norm, steps, x, y % 3, jax.random.key(0), jnp.float32(eps))
    halvings = [sum(w <= i for w in _paper_checkpoints(steps)[1:]) for i in range(steps)]
    np.testing.assert_array_equal(tr['eta'][:, 0], 2 * eps * 0.5 ** np.array(halvings))
    np.testing.assert_allclose(tr['x'], np.broadcast_to(tr['x'][0], tr['x'].shape), atol=1e-6)


def _staircase(v):
  """Two classes on 1x1x2 images; the loss of class 0 rises with the angle of v around (0.5, 0.5),
  counter-clockwise from -pi to pi (where it drops by 2 pi), and steeply with the radius."""
  d = v.reshape(v.shape[0], 2) - 0.5
  s = jnp.arctan2(d[:, 1], d[:, 0]) + 40 * jnp.sqrt(jnp.sum(d * d, 1))
  return jnp.stack([jnp.zeros_like(s), s], 1)


def test_condition_2_halves_when_the_best_loss_stalls_and_restarts_from_the_best_point():
  # L2 ball of radius 0.25 around (0.5, 0.5), starting just below the drop (angle pi - 0.01): the
  # gradient points mostly outwards, so each step stays on the circle and turns by about 0.07. The
  # first step crosses the drop; every later one raises the loss, which stays below the start's.
  # w_1 = 11: the loss rose in 10 of 11 iterations (no condition 1) and condition 2 does not apply
  # at w_1: the step is kept. w_2 = 21: it rose in all 10, but neither the step size nor the best
  # loss changed since w_1 (condition 2): the step halves and the next iteration starts from x0.
  steps, eps = 50, 0.25
  w1, w2 = _paper_checkpoints(steps)[1:3]
  assert (w1, w2) == (11, 21)
  x = jnp.full((1, 1, 1, 2), 0.5)
  x0 = x + eps * jnp.array([np.cos(np.pi - 0.01), np.sin(np.pi - 0.01)]).reshape(x.shape)
  onehot = jax.nn.one_hot(jnp.zeros(1, jnp.int32), 2)
  run = jax.jit(lambda x0: apgd._run(
      _staircase, x, jnp.zeros(1, jnp.int32), x0, lambda z: apgd.LOSSES['ce'](z, onehot),
      norm='l2', eps=eps, steps=steps, rho=0.75, trace=True))
  tr = jax.tree.map(np.asarray, run(x0)[-1])
  loss = tr['loss'][:, 0]
  assert loss[1] < loss[0] and np.all(np.diff(loss[1:w2 + 1]) > 0) and loss[w2] < loss[0]
  np.testing.assert_array_equal(tr['eta'][:w2 + 1, 0], [2 * eps] * w2 + [eps])
  np.testing.assert_array_equal(tr['start'][w2], x0)  # the best point, not x^(w_2)
  assert np.abs(tr['x'][w2] - x0).max() > 0.1


def _replay_schedule(tr, eps, steps, rho=0.75):
  """What Croce & Hein's rule makes of a traced run's losses: per iteration the step size and the
  point stepped from, and a count of the checkpoint decisions by the conditions that held.

  After the iteration that makes x^(w_j), j >= 1, the step size halves and the next iteration
  starts from the best point so far (else from x^(w_j)) when condition 1: the loss rose in at most
  rho of the iterations since w_{j-1} (`<=` as in the authors' code; a step from a restart compares
  with the best loss), or condition 2: neither the step size nor the best loss changed since
  w_{j-1} (never at w_1, as in the authors' code).
  """
  tr = jax.tree.map(np.asarray, tr)
  loss, xs = tr['loss'], tr['x']
  bcast = lambda v: v.reshape((-1,) + (1,) * (xs.ndim - 2))
  checks = set(_paper_checkpoints(steps)[1:])
  eta = np.full(loss.shape[1], 2 * eps, np.float32)
  current, best, best_x, start = loss[0], loss[0], xs[0], xs[0]
  n_up, best_at_check, halved, last = 0, loss[0], np.ones(loss.shape[1], bool), 0
  etas, starts, seen = [], [], collections.Counter()
  for i in range(steps):
    etas.append(eta)
    starts.append(start)
    n_up = n_up + (loss[i + 1] > current)
    current, start = loss[i + 1], xs[i + 1]
    up = loss[i + 1] > best
    best, best_x = np.where(up, loss[i + 1], best), np.where(bcast(up), xs[i + 1], best_x)
    if i + 1 in checks:
      cond1 = n_up <= rho * (i + 1 - last)
      cond2 = ~halved & (best <= best_at_check)
      halve = cond1 | cond2
      moved = np.any((best_x != xs[i + 1]).reshape(len(best), -1), axis=1)
      seen.update({'condition 1 only': np.sum(cond1 & ~cond2),
                   'condition 2 only': np.sum(cond2 & ~cond1), 'kept': np.sum(~halve),
                   'restart elsewhere': np.sum(halve & moved)})
      eta = np.where(halve, eta / 2, eta)
      start = np.where(bcast(halve), best_x, start)
      current = np.where(halve, best, current)
      n_up, best_at_check, halved, last = 0, best, halve, i + 1
  return np.stack(etas), np.stack(starts), seen


_STEPS, _EPS = 70, 0.5


@functools.lru_cache(maxsize=None)
def _mlp_trace():
  """APGD-CE, L2, eps 0.5, 70 steps on 64 points of the MLP: x, y, (x, mis, loss) returned and
  the trace, as numpy arrays."""
  x, _ = _data(11, 64, shape=(8, 8, 1), num_classes=10)
  y = jnp.argmax(mlp_logits(x), -1)
  *ret, tr = _traced(mlp_logits, 'l2', _STEPS, x, y, jax.random.key(0), jnp.float32(_EPS))
  return np.asarray(x), np.asarray(y), [np.asarray(v) for v in ret], jax.tree.map(np.asarray, tr)


def test_step_size_schedule_and_restarts_follow_the_paper_on_a_traced_run():
  x, y, (x_ret, mis_ret, loss_ret), tr = _mlp_trace()
  steps, eps = _STEPS, _EPS
  # The trace is the run's: its losses are those of its points.
  flat_x = tr['x'].reshape((-1,) + x.shape[1:])
  onehot = jax.nn.one_hot(jnp.tile(y, steps + 1), 10)
  np.testing.assert_allclose(apgd.LOSSES['ce'](mlp_logits(flat_x), onehot),
                             tr['loss'].reshape(-1), rtol=1e-5, atol=1e-6)
  etas, starts, seen = _replay_schedule(tr, eps, steps)
  # Every kind of decision happened (else a dropped condition or restart would go unnoticed).
  assert min(seen.values()) > 0 and len(seen) == 4, seen
  for i in range(steps):
    np.testing.assert_array_equal(tr['eta'][i], etas[i], err_msg=f'step size of iteration {i}')
    np.testing.assert_array_equal(tr['start'][i], starts[i], err_msg=f'start of iteration {i}')
  # The returned point is the strongest iterate: misclassified first, then the highest loss.
  best = np.zeros(len(y), int)
  for k in range(1, steps + 1):
    b = (tr['mis'][best, np.arange(len(y))], tr['loss'][best, np.arange(len(y))])
    best = np.where((tr['mis'][k] & ~b[0]) | ((tr['mis'][k] == b[0]) & (tr['loss'][k] > b[1])),
                    k, best)
  assert 0 < np.mean(best < steps) < 1, best  # the last iterate is not always the strongest
  np.testing.assert_array_equal(x_ret, tr['x'][best, np.arange(len(y))])
  np.testing.assert_array_equal(mis_ret, np.any(tr['mis'], axis=0))
  np.testing.assert_array_equal(loss_ret, tr['loss'][best, np.arange(len(y))])


def test_every_iteration_is_the_papers_momentum_step_from_its_start_point():
  # x^(k+1) = P(x^(k) + a (z - x^(k)) + (1 - a) (x^(k) - x^(k-1))), z = P(x^(k) + eta grad/|grad|),
  # a = 1 at k = 0 and 0.75 after; x^(k) is the traced start (the best point after a halving, with
  # its own gradient) and x^(k-1) the previous start. P: onto the L2 ball around x, then [0,1].
  x, y, _, tr = _mlp_trace()
  start, eta = tr['start'], tr['eta'].reshape(_STEPS, -1, 1, 1, 1)
  prev = np.concatenate([start[:1], start[:-1]])
  onehot = jax.nn.one_hot(y, 10)
  grad = jax.vmap(jax.grad(lambda v: jnp.sum(apgd.LOSSES['ce'](mlp_logits(v), onehot))))(start)
  l2 = lambda v: jnp.sqrt(jnp.sum(jnp.square(v), axis=(-3, -2, -1), keepdims=True))
  proj = lambda v: jnp.clip(x + (v - x) * jnp.minimum(1.0, _EPS / l2(v - x)), 0.0, 1.0)
  z = proj(start + eta * grad / l2(grad))
  a = np.where(np.arange(_STEPS) == 0, 1.0, 0.75).reshape(-1, 1, 1, 1, 1)
  np.testing.assert_allclose(proj(start + a * (z - start) + (1 - a) * (start - prev)),
                             tr['x'][1:], atol=1e-5)


def test_restarts_keep_each_examples_strongest_run():
  # A stand-in for one APGD run whose result, misclassification and loss depend on its keys only.
  def run(keys):
    loss = jax.vmap(lambda k: jax.random.uniform(k))(keys)
    mis = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1)) < 0.3)(keys)
    return jnp.stack([loss, mis], 1), mis, loss

  keys, restarts = jax.random.split(jax.random.key(0), 256), 4
  x_adv, mis, loss = jax.jit(apgd._with_restarts, static_argnums=(0, 2))(run, keys, restarts)
  singles = [run(k) for k in pgd.restart_keys(keys, restarts)]  # restart r alone, its own keys
  strongest = np.lexsort((np.stack([s[2] for s in singles]), np.stack([s[1] for s in singles])),
                         axis=0)[-1]
  assert len(set(strongest.tolist())) == restarts  # every restart wins somewhere
  for field, value in enumerate((x_adv, mis, loss)):
    np.testing.assert_array_equal(
        value, np.stack([s[field] for s in singles])[strongest, np.arange(256)])


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_start_lies_on_the_sphere_of_radius_eps(norm):
  x = 0.4 + 0.2 * jax.random.uniform(jax.random.key(0), (64, 3, 3, 2))  # no clipping at eps 0.1
  x0 = apgd._surface_start(jax.random.split(jax.random.key(1), 64), x, norm, 0.1)
  np.testing.assert_allclose(threat.distance(x0, x, norm), 0.1, rtol=1e-5)
  assert len(np.unique(np.asarray(x0 - x).round(5).reshape(64, -1), axis=0)) == 64
