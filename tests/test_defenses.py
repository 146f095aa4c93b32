"""Defenses: TRADES, MART and FGSM-RS losses against numpy, perturbations, train steps, configs."""

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import defenses
from robust_jax import errors
from robust_jax import rng
from robust_jax import validation
from robust_jax.attacks import objectives
from robust_jax.defenses import trades
from tests import helpers
from tests.test_train import _run_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 0.1


def _config(name, **overrides):
  return helpers.quick_config(**{'defense.name': name, 'model.name': 'small_cnn',
                                 'train_attack.eps': EPS, 'train_attack.step_size': 0.02,
                                 'defense.fgsm_step': 1.25 * EPS, **overrides})


# ---- (a) losses on hand-made logits against numpy

def _np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_kl(p, q):
  return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def _logits_forward(v):
  """A 'model' whose inputs are already logits; its batch statistics record which input it saw."""
  return v, {'seen': jnp.sum(v)}


def _hand_made(seed=0, batch=6, classes=5):
  r = np.random.default_rng(seed)
  clean = r.normal(0, 2, (batch, classes)).astype(np.float32)
  adv = (clean + r.normal(0, 2, (batch, classes))).astype(np.float32)
  y = r.integers(0, classes, batch)
  return clean, adv, y, np.eye(classes, dtype=np.float32)[y]


def _call_loss(name, beta=2.5):
  clean, adv, y, onehot = _hand_made()
  loss = defenses.build(_config(name, **{'defense.beta': beta})).loss
  per_example, logits, stats = loss(_logits_forward, jnp.asarray(clean), jnp.asarray(adv),
                                    jnp.asarray(onehot))
  np.testing.assert_allclose(stats['seen'], adv.sum(), rtol=1e-5)  # stats of the adversarial pass
  return np.asarray(per_example), np.asarray(logits), clean, adv, y


def test_trades_loss_is_ce_plus_beta_kl():
  per_example, logits, clean, adv, y = _call_loss('trades', beta=2.5)
  p, q = _np_softmax(clean.astype(np.float64)), _np_softmax(adv.astype(np.float64))
  ce = -np.log(p[np.arange(len(y)), y])
  np.testing.assert_allclose(per_example, ce + 2.5 * _np_kl(p, q), rtol=1e-5)
  np.testing.assert_array_equal(logits, clean)  # accuracy on the clean logits


def test_mart_loss_is_boosted_ce_plus_weighted_kl():
  per_example, logits, clean, adv, y = _call_loss('mart', beta=2.5)
  p, q = _np_softmax(clean.astype(np.float64)), _np_softmax(adv.astype(np.float64))
  rows = np.arange(len(y))
  q_wrong = q.copy()
  q_wrong[rows, y] = -1.0
  bce = -np.log(q[rows, y]) - np.log(1.0 - q_wrong.max(-1))
  expected = bce + 2.5 * _np_kl(p, q) * (1.0 - p[rows, y])
  np.testing.assert_allclose(per_example, expected, rtol=1e-5)
  np.testing.assert_array_equal(logits, adv)  # accuracy on the adversarial logits


def test_mart_loss_and_gradient_stay_finite_when_a_wrong_class_is_certain():
  onehot = jnp.eye(3)[jnp.array([0, 1])]
  logits = jnp.array([[0.0, 80.0, -5.0], [3.0, 0.0, 90.0]])
  loss_fn = defenses.build(_config('mart')).loss

  def total(z):
    return jnp.sum(loss_fn(lambda v: (v, {}), z, z + 1.0, onehot)[0])

  assert np.isfinite(float(total(logits)))
  assert np.all(np.isfinite(np.asarray(jax.grad(total)(logits))))


def test_fgsm_rs_loss_is_ce_on_the_adversarial_logits():
  per_example, logits, _, adv, y = _call_loss('fgsm_rs')
  q = _np_softmax(adv.astype(np.float64))
  np.testing.assert_allclose(per_example, -np.log(q[np.arange(len(y)), y]), rtol=1e-5)
  np.testing.assert_array_equal(logits, adv)


# ---- (b) perturbations: in the ball and [0,1], and they raise their own objective

_W = jax.random.normal(jax.random.key(3), (8 * 8 * 1, 10)) * 0.5


def _linear_logits(x):
  return x.reshape(x.shape[0], -1) @ _W


def _images(batch=8):
  x = jax.random.uniform(jax.random.key(4), (batch, 8, 8, 1))
  x = x.at[:, 0].set(0.0).at[:, -1].set(1.0)  # rows at the edges of [0,1] exercise the clip
  y = jax.random.randint(jax.random.key(5), (batch,), 0, 10)
  return x, y


def _perturb(config, x, y):
  keys = rng.example_keys(jax.random.key(6), rng.ATTACK, jnp.arange(x.shape[0]))
  return np.asarray(defenses.build(config).perturb(_linear_logits, x, y, keys)), keys


def _ce(x, y):
  return np.asarray(objectives.cross_entropy(_linear_logits(x), jax.nn.one_hot(y, 10)))


def _kl_from_clean(x, xa):
  return np.asarray(trades.kl_divergence(_linear_logits(x), _linear_logits(jnp.asarray(xa))))


@pytest.mark.parametrize('name,norm', [('trades', 'linf'), ('trades', 'l2'), ('mart', 'linf'),
                                       ('fgsm_rs', 'linf'), ('fgsm_rs', 'l2')])
def test_perturbation_stays_in_the_ball_and_the_unit_box(name, norm):
  eps = EPS if norm == 'linf' else 0.5
  config = _config(name, **{'train_attack.norm': norm, 'train_attack.eps': eps,
                            'train_attack.steps': 5, 'train_attack.step_size': 0.4 * eps,
                            'defense.fgsm_step': 1.25 * eps})
  x, y = _images()
  x_adv, _ = _perturb(config, x, y)
  d = (x_adv - np.asarray(x)).reshape(len(x_adv), -1)
  size = np.abs(d).max(1) if norm == 'linf' else np.linalg.norm(d, axis=1)
  assert size.max() <= eps * (1 + 1e-5) and size.max() > 0.5 * eps
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_trades_perturbation_raises_the_kl_more_than_a_random_corner():
  x, y = _images()
  x_adv, _ = _perturb(_config('trades', **{'train_attack.steps': 5}), x, y)
  signs = jax.random.rademacher(jax.random.key(7), x.shape, dtype=jnp.float32)
  corner = np.clip(np.asarray(x) + EPS * np.asarray(signs), 0.0, 1.0)
  kl_adv = _kl_from_clean(x, x_adv)
  assert np.all(kl_adv > 0) and kl_adv.mean() > 2 * _kl_from_clean(x, corner).mean()


@pytest.mark.parametrize('name', ['mart', 'fgsm_rs'])
def test_ce_perturbations_raise_the_cross_entropy(name):
  x, y = _images()
  x_adv, _ = _perturb(_config(name, **{'train_attack.steps': 5}), x, y)
  gain = _ce(jnp.asarray(x_adv), y) - _ce(x, y)
  assert gain.mean() > 0 and np.mean(gain > 0) >= 0.75


def test_trades_perturbation_does_not_depend_on_how_the_batch_is_split():
  config = _config('trades', **{'train_attack.steps': 3})
  x, y = _images()
  whole, keys = _perturb(config, x, y)
  perturb = defenses.build(config).perturb
  halves = [perturb(_linear_logits, x[s], y[s], keys[s]) for s in (slice(0, 4), slice(4, 8))]
  np.testing.assert_allclose(whole, np.concatenate(halves), atol=1e-6)


# ---- (c) training steps through train.make_train_step

@pytest.mark.parametrize('name', ['mart', 'fgsm_rs'])
def test_two_training_steps_on_four_devices(name):
  dataset = helpers.tiny_dataset(n_train=32, n_test=8, shape=(8, 8, 1))
  config = _config(name, **{'optim.name': 'sgd', 'optim.learning_rate': 0.01})
  state, metrics = _run_steps(config, dataset, jax.devices(), 2)
  assert int(state.step) == 2 and int(metrics['count']) == 8
  assert np.isfinite(float(metrics['loss_sum'])) and float(metrics['loss_sum']) > 0


@pytest.mark.multidevice
def test_trades_one_and_four_devices_give_the_same_parameters():
  dataset = helpers.tiny_dataset(n_train=32, n_test=8, shape=(8, 8, 1))
  config = _config('trades', **{'optim.name': 'sgd', 'optim.learning_rate': 0.01,
                                'train.batch_size': 16})
  assert len(jax.devices()) == 4
  one, m1 = _run_steps(config, dataset, jax.devices()[:1], 2)
  four, m4 = _run_steps(config, dataset, jax.devices(), 2)
  assert np.isfinite(float(m4['loss_sum']))
  np.testing.assert_allclose(m1['loss_sum'], m4['loss_sum'], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  fresh, _ = _run_steps(config, dataset, jax.devices()[:1], 0)
  assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(jax.tree.leaves(one.params),
                                                         jax.tree.leaves(fresh.params)))


# ---- (d) bad hyper-parameters name their field

@pytest.mark.parametrize('name,field,value', [
    ('trades', 'beta', -1.0), ('trades', 'beta', math.nan), ('trades', 'beta', '6'),
    ('mart', 'beta', math.inf), ('mart', 'beta', -0.5),
    ('fgsm_rs', 'fgsm_step', 0.0), ('fgsm_rs', 'fgsm_step', -math.inf),
])
def test_bad_hyper_parameters_raise_config_error(name, field, value):
  config = _config(name)
  config.defense[field] = None  # ConfigDict fields are typed; None lets any value in
  config.defense[field] = value
  with pytest.raises(errors.ConfigError, match=rf'defense\.{field}='):
    defenses.build(config)


def test_trades_needs_a_pgd_style_train_attack():
  config = _config('trades', **{'train_attack': dict(name='apgd_ce', eps=EPS, steps=5)})
  with pytest.raises(errors.ConfigError, match='train_attack.name'):
    defenses.build(config)


# ---- config files

@pytest.mark.parametrize('name', ['trades', 'mart', 'fgsm_rs'])
def test_config_files_build_and_name_their_command(name):
  path = os.path.join(ROOT, 'configs', 'defenses', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert config.defense.name == name and config.train_attack.eps == pytest.approx(0.1)
  command = (f'python launch.py --config=configs/defenses/{name}.py '
             f'--workdir=workdirs/{name}')
  assert command in module.__doc__
  validation.validate(config, num_devices=4)
  defenses.build(config)
  if name == 'fgsm_rs':
    assert config.train_attack.step_size == pytest.approx(1.25 * config.train_attack.eps)
    assert config.optim.schedule == 'cyclic'


# ---- PGD-AT on part of each batch (Croce et al. 2019: 50% adversarial)

def test_pgd_at_adv_fraction_attacks_only_the_first_part_of_each_shard():
  config = _config('pgd_at', **{'defense.adv_fraction': 0.5, 'train_attack.steps': 3})
  full = defenses.build(_config('pgd_at', **{'train_attack.steps': 3}))
  half = defenses.build(config)
  w = jax.random.normal(jax.random.key(0), (4 * 4, 10))
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w  # noqa: E731
  x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1))
  y = jnp.arange(6) % 10
  keys = rng.example_keys(jax.random.key(2), rng.ATTACK, jnp.arange(6))
  got = half.perturb(logits_fn, x, y, keys)
  np.testing.assert_array_equal(got[3:], x[3:])  # ceil(0.5 * 6) = 3 attacked, 3 clean
  np.testing.assert_array_equal(got[:3], full.perturb(logits_fn, x[:3], y[:3], keys[:3]))
  assert float(jnp.abs(got[:3] - x[:3]).max()) > 0


@pytest.mark.parametrize('value', [0, 1.5, -0.1, None])  # ml_collections refuses str/bool
def test_pgd_at_adv_fraction_must_be_in_0_1(value):
  with pytest.raises(errors.ConfigError, match='defense.adv_fraction'):
    validation.validate(_config('pgd_at', **{'defense.adv_fraction': value}))


def test_fgsm_rs_without_start_clipping_takes_the_gradient_at_the_raw_start():
  """Wong et al.'s MNIST code: grad at x + delta unclipped, then the step, then the clips."""
  from robust_jax.attacks import threat  # pylint: disable=g-import-not-at-top
  from robust_jax.defenses import fast_at  # pylint: disable=g-import-not-at-top
  w = jax.random.normal(jax.random.key(0), (16, 10))
  logits_fn = lambda v: jnp.square(v.reshape(v.shape[0], -1)) @ w  # noqa: E731  # grad depends on v
  x = jnp.zeros((4, 4, 4, 1)).at[:, :2].set(1.0)  # pixels at both ends of [0,1]
  y = jnp.arange(4)
  keys = rng.example_keys(jax.random.key(1), rng.ATTACK, jnp.arange(4))
  delta = threat.random_start(keys, x.shape, 'linf', EPS)
  onehot = jax.nn.one_hot(y, 10)
  grad = jax.grad(lambda d: jnp.sum(objectives.cross_entropy(logits_fn(x + d), onehot)))(delta)
  want = jnp.clip(x + jnp.clip(delta + 0.375 * jnp.sign(grad), -EPS, EPS), 0, 1)
  got = fast_at.make_perturb(norm='linf', eps=EPS, step_size=0.375, clip_start=False)(
      logits_fn, x, y, keys)
  np.testing.assert_allclose(got, want, atol=1e-6)
  clipped = fast_at.make_perturb(norm='linf', eps=EPS, step_size=0.375)(logits_fn, x, y, keys)
  assert float(jnp.abs(clipped - got).max()) > 0  # the clipped start gives other gradients
  with pytest.raises(errors.ConfigError, match='fgsm_clip_start'):
    validation.validate(_config('fgsm_rs', **{'defense.fgsm_clip_start': None}))
