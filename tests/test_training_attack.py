"""`train_attack` has one meaning: one parse (defenses.train_attack), read alike by every defense.

The monitor's attack follows it unless set; fields a defense cannot honour are config errors;
the deprecated defense.fgsm_step still gives the FGSM-RS it gave.
"""

import importlib.util
import logging
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from robust_jax import attacks
from robust_jax import defenses
from robust_jax import errors
from robust_jax import rng
from robust_jax import validation
from robust_jax.defenses import training_attack
from robust_jax.training import checkpoint
from robust_jax.training import monitor
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 0.1
FGSM_RS = dict(name='fgsm', eps=EPS, steps=1, step_size=1.25 * EPS, random_start=True,
               track_best=False)
FREE = dict(name='fgsm', eps=EPS, steps=1, step_size=EPS, random_start=False, track_best=False)
# The train_attack each defense is built with here (pgd_at, mart, ensemble_at, trades, awp: the
# default's PGD).
ATTACK_OF = {'fgsm_rs': FGSM_RS, 'free_at': FREE}
TRAINED_ON_AN_ATTACK = ('pgd_at', 'mart', 'ensemble_at', 'trades', 'fgsm_rs', 'free_at', 'awp')


def _config(name, **overrides):
  extra = {'train_attack': dict(ATTACK_OF[name])} if name in ATTACK_OF else {}
  return helpers.quick_config(**{'defense.name': name, 'model.name': 'small_cnn',
                                 'defense.static_models': 'unused', **extra, **overrides})


def _load(path):
  spec = importlib.util.spec_from_file_location('_cfg_' + path.replace('/', '_')[:-3],
                                                os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _problem():
  w = jax.random.normal(jax.random.key(0), (4 * 4, 10))
  logits_fn = lambda v: jnp.square(v.reshape(v.shape[0], -1) - 0.3) @ w  # noqa: E731
  x = jax.random.uniform(jax.random.key(1), (6, 4, 4, 1), minval=0.3, maxval=0.7)
  y = jnp.arange(6) % 10
  keys = rng.example_keys(jax.random.key(2), rng.ATTACK, jnp.arange(6))
  return logits_fn, x, y, keys


# ---- one parse, read alike

@pytest.mark.parametrize('name', TRAINED_ON_AN_ATTACK)
def test_every_defense_reads_the_spec_train_attack_returns(name, monkeypatch):
  """The spec is replaced by one with a smaller eps than the config's: a defense that parsed
  config.train_attack its own way would perturb by 0.1, not 0.04."""
  calls = []
  parse = defenses.train_attack

  def spy(config):
    calls.append(config.defense.name)
    return {**parse(config), 'eps': 0.04}
  monkeypatch.setattr(defenses, 'train_attack', spy)
  built = defenses.build(_config(name))
  assert calls, f'defense {name} did not parse train_attack through defenses.train_attack'
  logits_fn, x, y, keys = _problem()
  if name == 'free_at':
    moved = built.replay_update(jnp.zeros((1, 4)), jnp.array([[1.0, -2.0, 3.0, 0.0]]))
    np.testing.assert_allclose(moved, [[0.04, -0.04, 0.04, 0.0]], atol=1e-7)
    return
  x_adv = built.perturb(logits_fn, x, y, keys)
  size = float(jnp.abs(x_adv - x).max())
  assert 0.035 < size <= 0.04 + 1e-6, size


def test_fgsm_rs_and_free_at_take_the_step_size_of_their_attack():
  logits_fn, x, y, keys = _problem()
  for step in (0.03, 0.125):
    fgsm_rs = defenses.build(_config('fgsm_rs', **{'train_attack.step_size': step}))
    want = attacks.build(dict(FGSM_RS, step_size=step))(logits_fn, x, y, keys)
    np.testing.assert_array_equal(fgsm_rs.perturb(logits_fn, x, y, keys), want)
    free = defenses.build(_config('free_at', **{'train_attack.step_size': step}))
    moved = free.replay_update(jnp.zeros((1, 2)), jnp.array([[1.0, -1.0]]))
    np.testing.assert_allclose(moved, [[min(step, EPS), -min(step, EPS)]], atol=1e-7)


def test_the_spec_is_the_full_attack_with_its_step_set():
  f = defenses.train_attack(helpers.quick_config())
  assert f == {**attacks.validate(helpers.quick_config().train_attack), 'eps': 0.1}
  assert isinstance(f['eps'], float) and f['step_size'] == 0.035
  unset = defenses.train_attack(_config('trades', **{'train_attack.step_size': None}))
  assert unset['step_size'] == 2.5 * 0.1 / 2  # PGD's own default, 2.5 eps / steps
  fgsm = defenses.train_attack(_config('free_at', **{'train_attack.step_size': None}))
  assert fgsm['step_size'] == 0.1  # FGSM's: eps


@pytest.mark.parametrize('name,field,value,needs', [
    ('trades', 'restarts', 2, '1'), ('trades', 'loss', 'margin', "'ce'"),
    ('trades', 'track_best', True, 'False'), ('trades', 'random_start', False, 'True'),
    ('free_at', 'name', 'pgd', "'fgsm'"),
    ('fgsm_rs', 'random_start', False, 'True'), ('fgsm_rs', 'name', 'pgd', "'fgsm'"),
    ('fgsm_rs', 'track_best', True, 'False'),
    ('free_at', 'random_start', True, 'False'), ('free_at', 'loss', 'margin', "'ce'"),
    ('awp', 'restarts', 3, '1'),  # awp_base trades: TRADES' rules
    ('pgd_at', 'eot_samples', 2, '1'), ('mart', 'bpda', True, 'False'),
    ('ensemble_at', 'detector_penalty', 1.0, '0.0'),
])
def test_a_field_the_defense_cannot_honour_is_a_config_error(name, field, value, needs):
  config = _config(name, **{'defense.awp_base': 'trades'})
  with config.unlocked():
    config.train_attack[field] = None  # ConfigDict fields are typed; None lets any value in
    config.train_attack[field] = value
  message = rf'train_attack\.{field}={value!r}.*Set train_attack\.{field}={needs}'
  for check in (validation.validate, defenses.build):
    with pytest.raises(errors.ConfigError, match=message.replace('(', r'\(')):
      check(config)


def test_defenses_that_honour_every_field_take_any_attack():
  for name in ('pgd_at', 'mart'):
    config = _config(name, **{'train_attack.restarts': 2, 'train_attack.loss': 'margin',
                              'train_attack.track_best': True})
    validation.validate(config)
    assert defenses.train_attack(config)['restarts'] == 2


def test_shipped_configs_read_as_what_they_train_against():
  for path, want in [('configs/defenses/fgsm_rs.py', {**FGSM_RS, 'step_size': 0.125}),
                     ('configs/defenses/free_at.py', FREE)]:
    f = defenses.train_attack(_load(path).get_config())
    assert {k: f[k] for k in want} == want, path


# ---- the deprecated defense.fgsm_step

def test_deprecated_fgsm_step_gives_the_same_fgsm_rs_and_says_so(caplog):
  new = _config('fgsm_rs')
  old = helpers.quick_config(**{'defense.name': 'fgsm_rs', 'model.name': 'small_cnn',
                                'defense.fgsm_step': 1.25 * EPS})  # train_attack: PGD-2
  with caplog.at_level(logging.WARNING):
    assert defenses.train_attack(old) == defenses.train_attack(new)
  assert 'defense.fgsm_step is deprecated' in caplog.text
  validation.validate(old)
  logits_fn, x, y, keys = _problem()
  np.testing.assert_array_equal(defenses.build(old).perturb(logits_fn, x, y, keys),
                                defenses.build(new).perturb(logits_fn, x, y, keys))
  # Other defenses never read it (old runs' config.json files carry it).
  pgd = helpers.quick_config(**{'defense.fgsm_step': 0.3})
  assert defenses.train_attack(pgd) == defenses.train_attack(helpers.quick_config())


@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')  # config_flags' loader
def test_command_lines_set_the_unset_fields(monkeypatch):
  argv = ['launch.py', f'--config={ROOT}/configs/default.py', '--config.defense.fgsm_step=0.2',
          '--config.train.monitor_attack.eps=0.3', '--config.train.monitor_attack.norm=l2']
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads the overrides from sys.argv
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values, lock_config=True)
  values(argv)
  assert values.config.defense.fgsm_step == 0.2
  m = defenses.monitor_attack(values.config)
  assert (m['norm'], m['eps'], m['step_size']) == ('l2', 0.3, 0.3 / 4)


# ---- the monitor's attack follows train_attack unless set

def test_the_monitor_follows_train_attack_unless_set():
  config = helpers.quick_config()
  # The default: PGD-10 of eps / 4 in train_attack's ball, as the old explicit default.
  old = attacks.validate(dict(name='pgd', eps=0.1, steps=10, step_size=0.025))
  assert defenses.monitor_attack(config) == old
  config.train_attack.eps, config.train_attack.norm = 0.2, 'l2'
  m = defenses.monitor_attack(config)
  assert (m['name'], m['norm'], m['eps'], m['steps'], m['step_size']) == (
      'pgd', 'l2', 0.2, 10, 0.05)
  config.train.monitor_attack.eps = 0.3  # set: kept
  config.train.monitor_attack.steps = 20
  m = defenses.monitor_attack(config)
  assert (m['norm'], m['eps'], m['steps'], m['step_size']) == ('l2', 0.3, 20, 0.075)
  config.train.monitor_attack.step_size = 0.01
  assert defenses.monitor_attack(config)['step_size'] == 0.01
  config.train.monitor_attack.eps = -1.0
  with pytest.raises(errors.ConfigError, match=r'train\.monitor_attack\.eps=-1\.0'):
    monitor.validate(config)


@pytest.mark.parametrize('path', ['configs/defenses/fgsm_rs.py', 'configs/defenses/free_at.py',
                                  'configs/defenses/ensemble_at.py'])
def test_configs_whose_monitor_follows_keep_their_old_monitor(path):
  got = defenses.monitor_attack(_load(path).get_config())
  assert got == attacks.validate(dict(name='pgd', eps=0.1, steps=10, step_size=0.025))


def test_the_monitor_records_the_attack_it_runs(tmp_path):
  config = helpers.quick_config(**{'train.monitor_examples': 16, 'train_attack.eps': 0.2})
  dataset = helpers.tiny_dataset(n_train=64, n_test=8, shape=(8, 8, 1))
  from robust_jax import models  # pylint: disable=g-import-not-at-top
  from robust_jax import parallel  # pylint: disable=g-import-not-at-top
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  m = monitor.Monitor(config, str(tmp_path), model, parallel.make_mesh(jax.devices()[:1]),
                      dataset, checkpoint.Checkpointer(str(tmp_path)), 0)
  assert m.record['attack'] == attacks.describe(training_attack.monitor_spec(config))
  assert m.record['attack'] == 'pgd10_linf_0.2_ce'
