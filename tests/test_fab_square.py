"""FAB-T and Square: invariants, exact projections, closed-form minimal distances, no gradients."""

import functools
import inspect

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from robust_jax.attacks import apgd
from robust_jax.attacks import fab
from robust_jax.attacks import objectives
from robust_jax.attacks import pgd
from robust_jax.attacks import square
from robust_jax.attacks import stages

_SHAPE = (4, 4, 2)
_K1, _K2 = jax.random.split(jax.random.key(0))
_W1 = jax.random.normal(_K1, (32, 16)) / 4
_W2 = jax.random.normal(_K2, (16, 5))


def mlp_logits(x):
  """A fixed 2-layer tanh network on 4x4x2 images with 5 classes."""
  return jnp.tanh(4 * (x.reshape(x.shape[0], -1) - 0.5) @ _W1) @ _W2


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run(make, static, logits_fn, x, y, key, eps):
  """eps is traced, so each discrete setting compiles once."""
  return make(eps=eps, **dict(static))(logits_fn, x, y, key)


def _data(seed, batch, logits_fn=mlp_logits, shape=_SHAPE):
  x = jax.random.uniform(jax.random.key(seed), (batch,) + shape)
  return x, jnp.argmax(logits_fn(x), -1)


def _norm(v, norm):
  return fab.lp_norm(v.reshape(v.shape[0], -1), norm)


_FAB = (fab.make_fab_targeted, (('steps', 5), ('num_targets', 2)))
_SQUARE = (square.make_square, (('steps', 10),))


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(which=st.sampled_from(['fab_t', 'square']), norm=st.sampled_from(['linf', 'l2',
                  'l1']), eps=st.floats(0.0, 2.0), seed=st.integers(0, 2**16))
def test_inside_ball_and_box_eps_zero_and_same_key(which, norm, eps, seed):
  make, static = _FAB if which == 'fab_t' else _SQUARE
  norm = 'linf' if which == 'square' and norm == 'l1' else norm
  # One restart count per (attack, norm), each count for each attack: 5 programs to compile, not
  # 10 (FAB: linf 1, l2 2, l1 1; Square: linf 2, l2 1).
  restarts = 1 + (['linf', 'l2', 'l1'].index(norm) + (which == 'square')) % 2
  static = static + (('norm', norm), ('restarts', restarts))
  x, y = _data(seed, 4)
  key = jax.random.key(seed)
  x_adv = _run(make, static, mlp_logits, x, y, key, jnp.float32(eps))
  assert x_adv.shape == x.shape and x_adv.dtype == jnp.float32
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert float(_norm(x_adv - x, norm).max()) <= eps * (1 + 1e-5) + 1e-6
  np.testing.assert_array_equal(x_adv, _run(make, static, mlp_logits, x, y, key, jnp.float32(eps)))
  np.testing.assert_array_equal(_run(make, static, mlp_logits, x, y, key, jnp.float32(0.0)), x)


def _reference_projection(t, w, b, norm):
  """min ||d|| s.t. w.(t+d) = b, 0 <= t+d <= 1 by scipy (None if the box misses the plane)."""
  dim, need, bounds = len(t), b - w @ t, list(zip(-t, 1 - t))
  if norm == 'l2':
    res = optimize.minimize(lambda d: 0.5 * d @ d, np.zeros(dim), jac=lambda d: d, bounds=bounds,
                            constraints=[dict(type='eq', fun=lambda d: w @ d - need,
                                              jac=lambda d: w)],
                            method='SLSQP', options=dict(ftol=1e-12, maxiter=500))
    return res.x if res.success and abs(w @ res.x - need) < 1e-7 else None
  if norm == 'l1':  # d = p - q, p, q >= 0
    res = optimize.linprog(np.ones(2 * dim), A_eq=np.concatenate([w, -w])[None], b_eq=[need],
                           bounds=[(0, hi) for _, hi in bounds] + [(0, -lo) for lo, _ in bounds])
    return res.x[:dim] - res.x[dim:] if res.status == 0 else None
  eye, ones = np.eye(dim), np.ones((dim, 1))  # linf: variables (d, s), |d_i| <= s
  res = optimize.linprog(np.eye(dim + 1)[-1], A_ub=np.block([[eye, -ones], [-eye, -ones]]),
                         b_ub=np.zeros(2 * dim), A_eq=np.append(w, 0.0)[None], b_eq=[need],
                         bounds=bounds + [(0, None)])
  return res.x[:dim] if res.status == 0 else None


@pytest.mark.parametrize('norm', ['linf', 'l2', 'l1'])
def test_projection_is_the_exact_box_constrained_minimum(norm):
  rng = np.random.default_rng(0)
  t = rng.uniform(0, 1, (60, 7))
  t[:20][rng.uniform(size=(20, 7)) < 0.3] = 1.0  # points on the box faces
  w = rng.normal(size=(60, 7))
  w[20:40][rng.uniform(size=(20, 7)) < 0.3] = 0.0  # flat coordinates
  b = np.sum(w * t, 1) + rng.normal(size=60) * rng.choice([0.1, 1.0, 5.0], 60)  # some infeasible
  d = np.asarray(jax.jit(jax.vmap(functools.partial(fab.project_hyperplane, norm=norm)))(
      jnp.float32(t), jnp.float32(w), jnp.float32(b)), np.float64)
  assert np.all(t + d >= -1e-6) and np.all(t + d <= 1 + 1e-6)
  order = {'linf': np.inf, 'l2': 2, 'l1': 1}[norm]
  infeasible = 0
  for i in range(60):
    ref = _reference_projection(t[i], w[i], b[i], norm)
    if ref is None:  # the box misses the plane: the corner that gets closest
      infeasible += 1
      up = w[i] * np.sign(b[i] - w[i] @ t[i])
      np.testing.assert_allclose(d[i], np.where(up > 0, 1 - t[i], np.where(up < 0, -t[i], 0)),
                                 atol=1e-5)
      continue
    assert abs(w[i] @ (t[i] + d[i]) - b[i]) < 1e-4 * (1 + abs(b[i]))
    assert np.linalg.norm(d[i], order) <= np.linalg.norm(ref, order) * (1 + 1e-3) + 1e-6
  assert 5 <= infeasible <= 40


def _sorted_water_level(weight, cap, need):
  """The sort-based water level fab.py used before its bisection: evaluate the piecewise linear
  sum_i weight_i min(s, cap_i) at every sorted cap and solve the piece that crosses `need`."""
  cap_s, weight_s = jax.lax.sort((cap, weight), num_keys=1)
  cum_w, cum_wc = jnp.cumsum(weight_s), jnp.cumsum(weight_s * cap_s)
  k = jnp.sum(cum_wc + cap_s * (cum_w[-1] - cum_w) < need)
  below_wc = jnp.where(k > 0, cum_wc[k - 1], 0.0)
  below_w = jnp.where(k > 0, cum_w[k - 1], 0.0)
  level = (need - below_wc) / jnp.maximum(cum_w[-1] - below_w, 1e-12)
  return jnp.where(k == cap.shape[0], jnp.inf, jnp.maximum(level, 0.0))


def _sorted_projection(t, w, b, norm):
  """fab.project_hyperplane as it was before the bisection (one sort per projection)."""
  need = b - jnp.dot(w, t)
  w = jnp.where(need < 0, -w, w)
  need, mag = jnp.abs(need), jnp.abs(w)
  cap = jnp.where(w > 0, 1.0 - t, jnp.where(w < 0, t, 0.0))
  if norm == 'linf':
    return jnp.sign(w) * jnp.minimum(_sorted_water_level(mag, cap, need), cap)
  if norm == 'l2':
    live = mag > 1e-12
    ratio = jnp.where(live, cap / jnp.where(live, mag, 1.0), 0.0)
    return jnp.where(live, w, 0.0) * jnp.minimum(_sorted_water_level(w * w, ratio, need), ratio)
  order = jnp.argsort(-mag)
  gain = jnp.cumsum(mag[order] * cap[order])
  k = jnp.sum(gain < need)
  rank = jnp.zeros(t.shape, jnp.int32).at[order].set(jnp.arange(t.shape[0], dtype=jnp.int32))
  below = jnp.where(k > 0, gain[k - 1], 0.0)
  partial = (need - below) / jnp.maximum(mag[order[jnp.minimum(k, t.shape[0] - 1)]], 1e-12)
  amount = jnp.where(rank < k, cap, jnp.where(rank == k, jnp.clip(partial, 0.0, cap), 0.0))
  return jnp.sign(w) * amount


@pytest.mark.parametrize('norm', ['linf', 'l2', 'l1'])
@pytest.mark.parametrize('dim', [7, 784])
def test_bisection_projection_matches_the_sort_based_one(norm, dim):
  # fab.py finds the water level / knapsack breakpoint by bisection instead of a sort (XLA's CPU
  # sort was 3/4 of a FAB step); same steps to float rounding, same hyperplane, same corner when
  # the box misses the plane, on points on the box faces, flat and tied coordinates and need 0.
  rng = np.random.default_rng(dim)
  n = 300
  t = rng.uniform(0, 1, (n, dim))
  t[:50][rng.uniform(size=(50, dim)) < 0.3] = 1.0
  t[50:100][rng.uniform(size=(50, dim)) < 0.3] = 0.0
  w = rng.normal(size=(n, dim))
  w[100:150][rng.uniform(size=(50, dim)) < 0.3] = 0.0
  w[150:200] = np.round(w[150:200])  # many tied magnitudes
  b = np.sum(w * t, 1) + rng.normal(size=n) * rng.choice([0.01, 0.1, 1.0, 10.0 * dim], n)
  b[200:210] = np.sum(w[200:210] * t[200:210], 1)  # already on the plane
  t, w, b = jnp.float32(t), jnp.float32(w), jnp.float32(b)
  new = np.asarray(jax.jit(jax.vmap(functools.partial(fab.project_hyperplane, norm=norm)))(t, w, b))
  ref = np.asarray(jax.jit(jax.vmap(functools.partial(_sorted_projection, norm=norm)))(t, w, b))
  scale = np.max(np.abs(ref), axis=1, keepdims=True) + 1e-3
  # Float32 rounding; L1's partial coordinate is a difference of sums over D terms (against a
  # float64 solve the bisection's error was the smaller one on the worst case here).
  np.testing.assert_allclose(new / scale, ref / scale, atol=5e-5 if norm == 'l1' else 1e-5)
  feasible = np.sum(np.abs(np.asarray(w)) * np.where(np.asarray(w) * (np.asarray(b) - np.sum(
      np.asarray(w * t), 1))[:, None] > 0, 1 - np.asarray(t), np.asarray(t)), 1) >= np.abs(
          np.asarray(b) - np.sum(np.asarray(w * t), 1)) * (1 + 1e-4)
  reach = np.sum(np.asarray(w, np.float64) * (np.asarray(t, np.float64) + new), 1)
  gap = np.abs(reach - np.asarray(b, np.float64))[feasible]
  assert np.all(gap <= 1e-4 * (1 + np.abs(np.asarray(b))[feasible])), gap.max()
  assert 10 <= feasible.sum() < n


@pytest.mark.parametrize('norm', ['linf', 'l2', 'l1'])
def test_fab_step_moves_towards_x0_by_how_far_the_iterate_is_from_the_boundary(norm):
  # The bias towards the original point's projection is alpha = min(|d1| / (|d1| + |d0|),
  # alpha_max), with d1, d0 the iterate's and the original point's projections onto the linearised
  # boundary. From x1 = x0 the step is the overshot projection x0 + eta d0; an iterate already on
  # the boundary (d1 = 0) gets alpha = 0 and stays where it is.
  rng = np.random.default_rng(0)
  x0 = rng.uniform(0.4, 0.6, (16, 12))
  w = rng.normal(size=(16, 12))
  b = np.sum(w * x0, 1) + 0.3 * np.linalg.norm(w, axis=1)  # the boundary, 0.3 away in L2
  step = lambda x1, diff: np.asarray(fab.fab_step(jnp.float32(x1), jnp.float32(x0),
                                                  jnp.float32(diff), jnp.float32(w), norm, 0.1,
                                                  1.05))
  d0 = np.asarray(jax.vmap(functools.partial(fab.project_hyperplane, norm=norm))(
      jnp.float32(x0), jnp.float32(w), jnp.float32(b)))
  np.testing.assert_allclose(step(x0, np.sum(w * x0, 1) - b), np.clip(x0 + 1.05 * d0, 0, 1),
                             atol=1e-5)
  # A point of the boundary that is not x0's projection: from the L2 foot x0 + 0.3 w / |w|, move
  # along the plane.
  along = rng.normal(size=(16, 12))
  along -= np.sum(along * w, 1, keepdims=True) * w / np.sum(w * w, 1, keepdims=True)
  x1 = (x0 + 0.3 * w / np.linalg.norm(w, axis=1, keepdims=True)
        + 0.05 * along / np.linalg.norm(along, axis=1, keepdims=True))
  assert np.all((x1 >= 0) & (x1 <= 1))
  np.testing.assert_allclose(step(x1, np.zeros(16)), x1, atol=1e-5)


def _linear(num_classes):
  w = jax.random.normal(jax.random.key(num_classes), (32, num_classes))
  return w, lambda x: (x.reshape(x.shape[0], -1) - 0.5) @ w


def _closest_boundary(x, y, w, norm):
  """Per example: the exact minimal `norm` distance to misclassification of the linear model
  (x - 0.5) @ w without box, and whether its minimiser stays inside [0,1] (then it is exact)."""
  x, w = np.asarray(x, np.float64).reshape(x.shape[0], -1), np.asarray(w, np.float64)
  dual = {'linf': 1, 'l2': 2, 'l1': np.inf}[norm]
  dist, inside = [], []
  for xi, yi in zip(x, np.asarray(y)):
    dw = w[:, yi][:, None] - np.delete(w, yi, axis=1)  # [D, K-1]
    gaps = (xi - 0.5) @ dw
    each = gaps / np.linalg.norm(dw, dual, axis=0)
    t = int(np.argmin(each))
    g = dw[:, t]
    if norm == 'linf':
      step = -each[t] * np.sign(g)
    elif norm == 'l2':
      step = -gaps[t] * g / (g @ g)
    else:
      step = np.zeros_like(g)
      j = np.argmax(np.abs(g))
      step[j] = -gaps[t] / g[j]
    dist.append(each[t])
    inside.append(np.all((xi + step >= 0) & (xi + step <= 1)))
  return np.array(dist), np.array(inside)


@pytest.mark.parametrize('norm,num_classes', [('linf', 5), ('l2', 5), ('l1', 5), ('l2', 2)])
def test_fab_finds_the_closed_form_minimum_of_a_linear_model(norm, num_classes):
  w, logits_fn = _linear(num_classes)
  x = jax.random.uniform(jax.random.key(1), (24,) + _SHAPE, minval=0.3, maxval=0.7)
  y = jnp.argmax(logits_fn(x), -1)
  dist, inside = _closest_boundary(x, y, w, norm)
  assert inside.mean() > 0.6
  x, y, dist = x[inside], y[inside], dist[inside]
  static = (('norm', norm), ('steps', 20))  # num_targets=9 is clipped to num_classes - 1
  run = lambda eps: _run(fab.make_fab_targeted, static, logits_fn, x, y, jax.random.key(0),
                         jnp.float32(eps))
  x_adv = run(10.0)
  found = np.asarray(_norm(x_adv - x, norm))
  assert np.all(found >= dist * (1 - 1e-4)) and np.all(found <= dist * 1.03), found / dist
  accuracy = lambda xa: float(jnp.mean(jnp.argmax(logits_fn(xa), -1) == y))
  assert accuracy(x_adv) == 0.0
  assert accuracy(run(1.04 * dist.max())) == 0.0
  np.testing.assert_array_equal(run(0.97 * dist.min()), x)


def test_fab_with_one_target_attacks_the_most_likely_other_class():
  # num_targets=1: the only target is the class other than y with the largest clean logit, t. On
  # a linear model FAB-T then finds the closest point of the hyperplane z_y = z_t (L2 distance
  # |z_y - z_t| / |w_y - w_t|), where z_t > z_y.
  w, logits_fn = _linear(5)
  x = jax.random.uniform(jax.random.key(2), (24,) + _SHAPE, minval=0.3, maxval=0.7)
  clean = logits_fn(x)
  y = jnp.argmax(clean, -1)
  t = jnp.argmax(jnp.where(jax.nn.one_hot(y, 5) > 0, -jnp.inf, clean), -1)
  dw = np.asarray(w[:, y] - w[:, t]).T  # [B, D]
  gap = np.asarray(jnp.take_along_axis(clean, y[:, None], 1) - jnp.take_along_axis(
      clean, t[:, None], 1))[:, 0]
  dist = gap / np.linalg.norm(dw, axis=1)
  foot = np.asarray(x).reshape(24, -1) - (gap / np.sum(dw * dw, 1))[:, None] * dw
  inside = np.all((foot >= 0) & (foot <= 1), axis=1)  # then the box does not bind
  assert inside.mean() > 0.6
  static = (('norm', 'l2'), ('steps', 20), ('num_targets', 1))
  x_adv = _run(fab.make_fab_targeted, static, logits_fn, x, y, jax.random.key(0),
               jnp.float32(10.0))
  z = logits_fn(x_adv)
  beats = np.asarray(jnp.take_along_axis(z, t[:, None], 1) > jnp.take_along_axis(z, y[:, None], 1))
  assert np.all(beats[:, 0])
  found = np.asarray(_norm(x_adv - x, 'l2'))[inside]
  assert np.all(found >= dist[inside] * (1 - 1e-4)) and np.all(found <= dist[inside] * 1.03)


def test_fab_returns_misclassified_points_unchanged():
  x, y = _data(3, 8)
  y = (y + 1) % 5  # every point misclassified
  out = _run(*_FAB, mlp_logits, x, y, jax.random.key(0), jnp.float32(1.0))
  np.testing.assert_array_equal(out, x)


_MLP8 = [jax.random.normal(k, s) / np.sqrt(s[0]) for k, s in
         zip(jax.random.split(jax.random.key(7)), [(192, 32), (32, 10)])]


def mlp8_logits(x):
  """A fixed random 2-layer network on 8x8x3 images with 10 classes."""
  return 10 * jnp.tanh(4 * (x.reshape(x.shape[0], -1) - 0.5) @ _MLP8[0]) @ _MLP8[1]


@jax.custom_jvp
def _no_gradient(x):
  return x


@_no_gradient.defjvp
def _no_gradient_jvp(primals, tangents):
  return primals[0], tangents[0] * jnp.nan


def poisoned_mlp8_logits(x):
  """mlp8_logits, but any gradient through it is NaN."""
  return mlp8_logits(_no_gradient(x))


@pytest.mark.parametrize('norm,eps', [('linf', 0.05), ('l2', 0.75)])
def test_square_lowers_accuracy_without_gradients(norm, eps):
  x, y = _data(2, 32, mlp8_logits, (8, 8, 3))
  grad = jax.grad(lambda v: jnp.sum(poisoned_mlp8_logits(v)))(x)
  assert bool(jnp.all(jnp.isnan(grad)))
  static = (('norm', norm), ('steps', 100))
  x_adv = _run(square.make_square, static, poisoned_mlp8_logits, x, y, jax.random.key(0),
               jnp.float32(eps))
  np.testing.assert_array_equal(
      x_adv, _run(square.make_square, static, mlp8_logits, x, y, jax.random.key(0),
                  jnp.float32(eps)))
  noise = jnp.sign(jax.random.normal(jax.random.key(1), x.shape)) * eps
  noise = noise if norm == 'linf' else noise / np.sqrt(192)
  accuracy = lambda xa: float(jnp.mean(jnp.argmax(mlp8_logits(xa), -1) == y))
  assert accuracy(x_adv) <= 0.3 < accuracy(jnp.clip(x + noise, 0, 1)) - 0.3


def test_square_restarts_keep_each_examples_highest_margin_run():
  x, y = _data(5, 32)
  key, restarts, eps = jax.random.key(1), 3, 0.05
  static = (('norm', 'linf'), ('steps', 5), ('restarts', restarts))
  many = _run(square.make_square, static, mlp_logits, x, y, key, jnp.float32(eps))
  # Run r alone, with the keys the attack gives run r.
  run = jax.jit(square.make_square_run(norm='linf', eps=eps, steps=5), static_argnums=0)
  keys = pgd.restart_keys(pgd.per_example_keys(key, x.shape[0]), restarts)
  margin = lambda xa: np.asarray(objectives.margin(mlp_logits(xa), jax.nn.one_hot(y, 5)))
  singles = np.stack([margin(run(mlp_logits, x, y, k)[0]) for k in keys])
  np.testing.assert_allclose(margin(many), singles.max(0), rtol=1e-5, atol=1e-6)
  # Not vacuous: the first run and the last are each not the best for some example.
  assert np.any(singles[0] < singles.max(0) - 1e-3) and np.any(singles[-1] < singles.max(0) - 1e-3)


@pytest.mark.parametrize('which', ['fab_t', 'square'])
def test_per_example_keys_make_results_independent_of_batch_split(which):
  make, static = _FAB if which == 'fab_t' else _SQUARE
  static = static + (('norm', 'l2'), ('restarts', 2))
  x, y = _data(4, 8)
  keys = jax.random.split(jax.random.key(3), 8)
  run = lambda s: _run(make, static, mlp_logits, x[s], y[s], keys[s], jnp.float32(1.0))
  whole = run(slice(None))
  halves = jnp.concatenate([run(slice(0, 4)), run(slice(4, 8))])
  # A batch of 8 and one of 4 may round the model's matmuls differently (seen on an AVX2 CPU),
  # and FAB's discrete choices (the best point so far, the target) can turn a 1-ulp difference
  # into a different valid adversarial point for a near-tie example. A batch-wide random stream
  # or examples leaking into each other would change most of them (Square: checked by hand with
  # the second half's keys swapped: all 4 differ); allow at most one to differ.
  diff = np.abs(np.asarray(whole) - np.asarray(halves)).reshape(8, -1).max(axis=1)
  assert int(np.sum(diff > 1e-6)) <= 1, diff


def test_square_schedule_follows_the_paper():
  sides = [int(square.window_side(i, 10000, 0.8, 32, 32, 'linf'))
           for i in (0, 10, 11, 51, 201, 501, 1001, 2001, 4001, 6001, 8001)]
  assert sides == [29, 29, 20, 14, 10, 7, 5, 4, 3, 2, 1]  # round(sqrt(0.8 * 1024 / 2^k))
  assert int(square.window_side(5, 100, 0.8, 32, 32, 'linf')) == 10  # 500 of 10000 rescaled
  assert int(square.window_side(9999, 10000, 0.8, 32, 32, 'l2')) == 3
  assert int(square.window_side(0, 10000, 0.8, 32, 32, 'l2')) == 29


@pytest.mark.parametrize('module,name,make', [(fab, 'fab_t', fab.make_fab_targeted),
                                              (square, 'square', square.make_square)])
def test_defaults_list_every_field_of_the_builder(module, name, make):
  params = inspect.signature(make).parameters
  defaults = module.DEFAULTS[name]
  assert set(defaults) == set(params)
  assert {'norm', 'eps', 'steps', 'restarts'} <= set(defaults)
  for field, value in defaults.items():
    if params[field].default is not inspect.Parameter.empty:
      assert params[field].default == value


@pytest.mark.parametrize('which, eps', [('fab_t', 0.03), ('fab_t', 0.08), ('apgd_t', 0.1),
                                        ('square', 0.1)])
def test_a_done_example_keeps_its_verdict_through_the_later_stages(which, eps):
  # The evaluation drops an example once `done` says no later stage can change its verdict
  # (robust_jax/eval/loop.py run_staged). Run every stage on every example: the verdict of an
  # example when it became done must be its verdict after the last stage, and the stages
  # together are the whole attack.
  make = {'fab_t': lambda: fab.make_fab_staged(norm='linf', eps=eps, steps=6, num_targets=4),
          'apgd_t': lambda: apgd.make_apgd_staged(norm='linf', eps=eps, steps=4, num_targets=4),
          'square': lambda: square.make_square_staged(norm='linf', eps=eps, steps=40)}[which]
  staged = make()
  x, y = _data(5, 64)
  keys = pgd.per_example_keys(jax.random.key(1), 64)
  verdict = lambda c: np.asarray(jnp.argmax(mlp_logits(staged.finish(mlp_logits, x, y, keys, c)),
                                            -1) == y)
  carry = staged.init(mlp_logits, x, y, keys)
  settled = np.zeros(64, bool)
  at_done = np.zeros(64, bool)
  for s in range(staged.num_stages(5)):
    newly = np.asarray(staged.done(carry)) & ~settled
    at_done[newly], settled = verdict(carry)[newly], settled | newly
    carry = staged.stage(mlp_logits, x, y, keys, carry, jnp.int32(s))
  final = verdict(carry)
  assert 0 < settled.sum() and 0 < final.sum() < 64
  np.testing.assert_array_equal(at_done[settled], final[settled])
  whole = stages.as_attack(staged)(mlp_logits, x, y, keys)
  np.testing.assert_array_equal(np.asarray(jnp.argmax(mlp_logits(whole), -1) == y), final)
