"""APGD: invariants, checkpoint schedule, DLR losses and strength against PGD on small models."""

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


def test_checkpoints_follow_the_paper():
  # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1): w_j = ceil(100 p_j).
  assert apgd.checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
  p = [0.0, 0.22]
  while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1 + 1e-9:
    p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
  for n in (7, 50, 100, 250):
    assert apgd.checkpoints(n) == sorted({int(np.ceil(round(q * n, 6))) for q in p})
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
