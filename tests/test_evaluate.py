"""Exact robust evaluation: every example once, worst case per example, split-invariant."""

import jax
import numpy as np
import pytest

from robust_jax import evaluate
from robust_jax import model_fns
from robust_jax import models
from robust_jax import parallel
from robust_jax import rng
from robust_jax import report
from tests import helpers


def _setup(config, dataset):
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  v = model_fns.init_variables(model, rng.root_key(0, rng.INIT), dataset.test_images.shape[1:])
  return model, v['params']


def test_counts_every_example_exactly_once_and_worst_case_is_per_example():
  config = helpers.quick_config()
  dataset = helpers.tiny_dataset(n_test=37)
  model, params = _setup(config, dataset)
  mesh = parallel.make_mesh()
  results, _ = evaluate.evaluate(model, params, {}, dataset, config, mesh, progress=False)
  assert results['num_examples'] == 37
  logits = model.apply({'params': params}, dataset.test_images.astype(np.float32) / 255,
                       train=False)
  expected = int(np.sum(np.argmax(logits, -1) == dataset.test_labels))
  assert results['clean_accuracy'] == expected / 37
  worst = results['worst_case_accuracy']
  assert worst <= min([results['clean_accuracy']] +
                      [a['accuracy'] for a in results['attacks'].values()])
  for name, a in results['attacks'].items():
    assert a['correct'] == round(a['accuracy'] * 37)
    assert a['metric'].startswith(config.eval.attacks[name].name)
  table = report.results_table(results)
  assert 'worst case' in table and '/ 37' in table


def test_results_do_not_depend_on_batch_size_or_device_count():
  config = helpers.quick_config()
  dataset = helpers.tiny_dataset(n_test=40)
  model, params = _setup(config, dataset)
  a, _ = evaluate.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                           progress=False)
  config.eval.batch_size = 20
  b, _ = evaluate.evaluate(model, params, {}, dataset, config,
                        parallel.make_mesh(jax.devices()[:1]), progress=False)
  for key in ('clean_accuracy', 'worst_case_accuracy'):
    assert a[key] == b[key]
  for name in a['attacks']:
    assert a['attacks'][name]['correct'] == b['attacks'][name]['correct']


def test_num_examples_limits_the_test_set():
  config = helpers.quick_config(**{'eval.num_examples': 10})
  dataset = helpers.tiny_dataset(n_test=37)
  model, params = _setup(config, dataset)
  results, _ = evaluate.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                                 progress=False)
  assert results['num_examples'] == 10


def test_suite_cascade_and_sanity_checks_are_reported():
  config = helpers.quick_config(**{'eval.suite': 'quick', 'eval.suite_eps': 0.1,
                                   'eval.sanity_checks': True, 'eval.sanity_examples': 16})
  dataset = helpers.tiny_dataset(n_test=24, shape=(8, 8, 1))  # small images: cheap attacks
  model, params = _setup(config, dataset)
  results, artifacts = evaluate.evaluate(model, params, {}, dataset, config,
                                         parallel.make_mesh(), progress=False)
  suite = results['suite']
  assert [a['name'] for a in suite['attacks']] == ['apgd_ce', 'apgd_t']
  assert suite['attacks'][0]['attacked'] == round(results['clean_accuracy'] * 24)
  assert suite['attacks'][1]['attacked'] == suite['attacks'][0]['attacked'] - \
      suite['attacks'][0]['broken']
  assert results['worst_case_accuracy'] <= suite['accuracy']
  names = {c['name'] for c in results['sanity_checks']}
  assert {'outputs are logits', 'input gradients finite and non-zero', 'unbounded attack succeeds',
          'x_adv inside ball and [0,1]', 'accuracy falls with eps'} <= names
  assert all(c['verdict'] in ('PASS', 'WARN', 'FAIL') for c in results['sanity_checks'])
  assert artifacts['x_adv'].shape == artifacts['x'].shape
  text = report.full_report(results, 'tiny')
  assert 'Sanity checks' in text and 'Suite `quick`' in text


def test_a_killed_evaluation_resumes_from_its_saved_batches(tmp_path, monkeypatch):
  config = helpers.quick_config(**{'eval.suite': 'quick', 'eval.suite_eps': 0.1})
  for a in config.eval.attacks.values():
    a.steps = 1
  dataset = helpers.tiny_dataset(n_test=40)
  model, params = _setup(config, dataset)
  mesh = parallel.make_mesh()
  full, _ = evaluate.evaluate(model, params, {}, dataset, config, mesh, progress=False)

  calls = {'n': 0}
  real_run = evaluate._run

  def dying_run(fn, *args, **kwargs):  # the 6th jitted batch call "kills" the process
    def counting(*a):
      calls['n'] += 1
      if calls['n'] == 6:
        raise KeyboardInterrupt('killed')
      return fn(*a)
    return real_run(counting, *args, **kwargs)

  monkeypatch.setattr(evaluate, '_run', dying_run)
  with pytest.raises(KeyboardInterrupt):
    evaluate.evaluate(model, params, {}, dataset, config, mesh, progress=False,
                      progress_dir=str(tmp_path))
  assert calls['n'] == 6 and list(tmp_path.glob('*.npz'))
  calls['n'] = -10**6  # the rerun never dies; count its batch calls
  resumed, _ = evaluate.evaluate(model, params, {}, dataset, config, mesh, progress=False,
                                 progress_dir=str(tmp_path))
  rerun_calls = calls['n'] + 10**6
  calls['n'] = -10**6
  evaluate.evaluate(model, params, {}, dataset, config, mesh, progress=False)
  assert rerun_calls == calls['n'] + 10**6 - 5  # the 5 batches done before the kill were skipped
  for key in ('clean_accuracy', 'worst_case_accuracy'):
    assert resumed[key] == full[key]
  assert resumed['attacks'].keys() == full['attacks'].keys()
  for name in full['attacks']:
    assert resumed['attacks'][name]['correct'] == full['attacks'][name]['correct']
  assert resumed['suite']['accuracy'] == full['suite']['accuracy']

  # Other weights: the saved batches do not match and are not used.
  other = jax.tree.map(lambda p: p * 0.5, params)
  calls['n'] = -10**6
  evaluate.evaluate(model, other, {}, dataset, config, mesh, progress=False,
                    progress_dir=str(tmp_path))
  assert calls['n'] + 10**6 == rerun_calls + 5
