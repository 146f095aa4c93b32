"""Ensembles: averaging logits or probabilities, loading members from workdirs, clear errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import errors
from robust_jax import experiment
from robust_jax import model_fns
from robust_jax import models
from robust_jax import validation
from robust_jax.defenses import ensemble
from robust_jax.training import checkpoint
from robust_jax.training import optim
from robust_jax.training import state as state_lib
from tests import helpers


def _save_member(workdir, model_name, seed, data='fashion_mnist'):
  """A 'trained' run: config.json and a checkpoint of a freshly initialised model."""
  config = helpers.quick_config(**{'model.name': model_name, 'seed': seed, 'data.name': data,
                                   'defense.name': 'standard'})
  model = models.build(config.model, num_classes=10, mean=(0.2860,), std=(0.3530,))
  tx, _ = optim.make_optimizer(config.optim, 1, 1)
  state = state_lib.init_state(model, tx, jax.random.key(seed), (28, 28, 1))
  workdir.mkdir(parents=True, exist_ok=True)
  ckpt = checkpoint.Checkpointer(str(workdir))
  ckpt.save(5, state=state)
  ckpt.close()
  (workdir / 'config.json').write_text(json.dumps(config.to_dict()))
  return model, state.params


def _ensemble_config(members, combine='logits', **overrides):
  c = helpers.quick_config(**{'defense.name': 'ensemble', **overrides})
  c.defense.members = ','.join(str(m) for m in members)
  c.defense.combine = combine
  return c


def test_combine_outputs_against_a_hand_computation():
  z = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32) * 3
  np.testing.assert_allclose(ensemble.combine_outputs(jnp.asarray(z), 'logits'), z.mean(0),
                             rtol=1e-6)
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  got = np.asarray(ensemble.combine_outputs(jnp.asarray(z), 'probs'))
  np.testing.assert_allclose(np.exp(got), p.mean(0), rtol=1e-5)  # softmax of it = mean probs
  np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-5)  # log-probabilities


def test_members_load_into_one_params_tree_and_average(tmp_path):
  a, pa = _save_member(tmp_path / 'a', 'small_cnn', 1)
  b, pb = _save_member(tmp_path / 'b', 'trades_cnn', 2)
  c = _ensemble_config([tmp_path / 'a', tmp_path / 'b'], 'logits')
  model, params, stats, members = ensemble.load(c, experiment.load_model)
  assert set(params) == {'member_0', 'member_1'} and stats == {}
  assert [m['model'] for m in members] == ['small_cnn', 'trades_cnn']
  assert [m['step'] for m in members] == [5, 5] and members[1]['seed'] == 2
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  za, zb = (np.asarray(m.apply({'params': p}, x, train=False)) for m, p in ((a, pa), (b, pb)))
  np.testing.assert_allclose(model_fns.logits_fn(model, params, stats)(x), (za + zb) / 2,
                             rtol=1e-4, atol=1e-5)
  probs = ensemble.Ensemble(members=model.members, combine='probs')
  p_a, p_b = (np.exp(z) / np.exp(z).sum(-1, keepdims=True) for z in (za, zb))
  np.testing.assert_allclose(model_fns.logits_fn(probs, params, stats)(x),
                             np.log((p_a + p_b) / 2), rtol=1e-4, atol=1e-5)


def test_launching_an_ensemble_evaluates_it_and_records_the_members(tmp_path, monkeypatch):
  for i in (1, 2):
    _save_member(tmp_path / f'member_{i}', 'small_cnn', i)
  c = _ensemble_config([tmp_path / 'member_1', tmp_path / 'member_2'], 'probs')
  c.eval.attacks = {'pgd': dict(name='pgd', eps=0.1, steps=2, step_size=0.05)}
  monkeypatch.setattr(experiment.data_lib, 'load', lambda cfg: helpers.tiny_dataset(n_test=16))
  wd = tmp_path / 'ens'
  results = experiment.train_and_evaluate(c, str(wd), progress=False)
  saved = json.loads((wd / 'results.json').read_text())
  assert saved['ensemble']['combine'] == 'probs'
  assert [m['workdir'] for m in saved['ensemble']['members']] == [
      str(tmp_path / 'member_1'), str(tmp_path / 'member_2')]
  assert 'train_steps' not in saved and results['num_examples'] == 16
  assert saved['attacks']['pgd']['accuracy'] <= saved['clean_accuracy']
  assert 'ensemble of 2 (probs: small_cnn, small_cnn)' in (wd / 'report.md').read_text()


def test_member_errors_name_the_member_and_the_fix(tmp_path):
  _save_member(tmp_path / 'a', 'small_cnn', 1)
  _save_member(tmp_path / 'cifar', 'small_cnn', 2, data='cifar10')
  (tmp_path / 'untrained').mkdir()
  (tmp_path / 'untrained' / 'config.json').write_text(
      json.dumps(helpers.quick_config().to_dict()))
  cases = [
      ([tmp_path / 'a', tmp_path / 'missing'], 'missing.*not the workdir of a trained run'),
      ([tmp_path / 'a', tmp_path / 'cifar'], "data.name='cifar10' but data.name='fashion_mnist'"),
  ]
  for members, message in cases:
    with pytest.raises(errors.ConfigError, match=message):
      validation.validate(_ensemble_config(members))
  with pytest.raises(errors.ConfigError, match='untrained.*no checkpoint'):
    ensemble.load(_ensemble_config([tmp_path / 'untrained']), experiment.load_model)
  with pytest.raises(errors.ConfigError, match='defense.members'):
    validation.validate(_ensemble_config([]))
  with pytest.raises(errors.ConfigError, match=r"defense.combine='mean'; valid: \['logits'"):
    validation.validate(_ensemble_config([tmp_path / 'a'], combine='mean'))
