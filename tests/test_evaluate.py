"""Exact robust evaluation: every example once, worst case per example, split-invariant."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax import model_fns
from robust_jax import models
from robust_jax import parallel
from robust_jax import rng
from robust_jax import report
from robust_jax import version
from robust_jax.eval import loop
from robust_jax.eval import robust
from robust_jax.eval import sanity
from tests import helpers


def _setup(config, dataset):
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  v = helpers.init_variables(model, rng.root_key(0, rng.INIT), dataset.test_images.shape[1:])
  return model, v['params']


def test_counts_every_example_exactly_once_and_worst_case_is_per_example():
  config = helpers.quick_config()
  dataset = helpers.tiny_dataset(n_test=37)
  model, params = _setup(config, dataset)
  logits = model.apply({'params': params}, dataset.test_images.astype(np.float32) / 255,
                       train=False)
  # Labels: the model's predictions, every 3rd moved, so the last (padded) batch of 5 holds
  # right and wrong examples and dropping or misplacing any of them changes the counts.
  y = np.asarray(np.argmax(logits, -1)).astype(np.int32)
  y[::3] = (y[::3] + 1) % 10
  dataset = dataclasses.replace(dataset, test_labels=y)
  mesh = parallel.make_mesh()
  results, artifacts = robust.evaluate(model, params, {}, dataset, config, mesh, progress=False)
  assert results['num_examples'] == 37
  direct = np.asarray(np.argmax(logits, -1)) == y
  assert 0 < direct[32:].sum() < 5
  np.testing.assert_array_equal(artifacts['per_example']['clean'], direct)
  expected = int(direct.sum())
  assert results['clean_accuracy'] == expected / 37 and results['clean_correct'] == expected
  worst = results['worst_case_accuracy']
  assert worst <= min([results['clean_accuracy']] +
                      [a['accuracy'] for a in results['attacks'].values()])
  for name, a in results['attacks'].items():
    assert a['correct'] == round(a['accuracy'] * 37)
    assert a['metric'].startswith(config.eval.attacks[name].name)
  table = robust.results_table(results)
  assert 'worst case' in table and '/ 37' in table


def _partly_robust(n_test=40, eps=0.01, **overrides):
  """A model, its params and data where every attack leaves accuracy strictly between 0 and
  clean, and clean strictly below 100%: labels are the model's own predictions, every 4th one
  moved to another class; small eps (step eps / 4, 2 steps)."""
  config = helpers.quick_config(**overrides)
  for a in config.eval.attacks.values():
    a.eps, a.step_size = eps, eps if a.name == 'fgsm' else eps / 4
  dataset = helpers.tiny_dataset(n_test=n_test, shape=(8, 8, 1))
  model, params = _setup(config, dataset)
  x = dataset.test_images.astype(np.float32) / 255
  y = np.asarray(jnp.argmax(model.apply({'params': params}, x, train=False), -1)).astype(np.int32)
  y[::4] = (y[::4] + 1) % 10
  return config, dataclasses.replace(dataset, test_labels=y), model, params


def _independent_per_example(config, dataset, model, params, stats=None):
  """Each attack on the whole test set in one unsharded, unpadded batch, with the per-example
  keys the evaluation's contract names: {name: bool[n]} and the clean bool[n]."""
  x = jnp.asarray(dataset.test_images.astype(np.float32) / 255)
  y = jnp.asarray(dataset.test_labels)
  index = jnp.arange(len(y), dtype=jnp.int32)
  root = rng.root_key(config.seed, rng.EVAL)
  fn = model_fns.logits_fn(model, params, stats or {}, 'eval')
  clean = np.asarray(jnp.argmax(fn(x), -1) == y)
  out = {}
  for a_i, (name, cfg) in enumerate(config.eval.attacks.items()):
    keys = rng.example_keys(jax.random.fold_in(root, a_i), rng.ATTACK, index)
    x_adv = attacks.build(dict(cfg))(fn, x, y, keys)
    out[name] = np.asarray(jnp.argmax(fn(x_adv), -1) == y)
  return clean, out


def test_worst_case_is_the_per_example_and_of_independent_runs():
  config, dataset, model, params = _partly_robust()
  results, art = robust.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                                   progress=False)
  clean, each = _independent_per_example(config, dataset, model, params)
  n = len(clean)
  assert 0 < clean.sum() < n
  for name, ok in each.items():  # the data exercise the AND: no attack is all-or-nothing
    assert 0 < ok.sum() < clean.sum(), (name, ok.sum())
    np.testing.assert_array_equal(art['per_example'][f'attack/{name}'], ok, err_msg=name)
    assert results['attacks'][name]['correct'] == ok.sum()
  worst = np.logical_and.reduce([clean] + list(each.values()))
  # The per-example AND is below the per-attack minimum here, so a worst case taken per
  # attack (min of the accuracies) instead of per example is caught.
  assert worst.sum() < min([clean.sum()] + [ok.sum() for ok in each.values()])
  assert results['worst_case_correct'] == worst.sum()
  assert results['worst_case_accuracy'] == worst.sum() / n
  assert results['clean_correct'] == clean.sum()  # every evaluation's results carry the counts
  np.testing.assert_array_equal(art['per_example']['worst_case'], worst)


def test_results_do_not_depend_on_batch_size_or_device_count():
  config, dataset, model, params = _partly_robust(n_test=42)
  a, art_a = robust.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                               progress=False)  # batch 8 on 4 devices: the last batch padded
  config.eval.batch_size = 20
  b, art_b = robust.evaluate(model, params, {}, dataset, config,
                               parallel.make_mesh(jax.devices()[:1]), progress=False)
  for key in ('clean_accuracy', 'worst_case_accuracy'):
    assert a[key] == b[key]
  assert 0 < a['worst_case_accuracy'] < a['clean_accuracy'] < 1
  for name in a['attacks']:
    assert 0 < a['attacks'][name]['accuracy'] < a['clean_accuracy']
  for k, v in art_a['per_example'].items():
    np.testing.assert_array_equal(v, art_b['per_example'][k], err_msg=k)


@pytest.mark.multidevice
def test_rows_left_run_below_64_rows_on_one_device_when_the_model_gives_the_same_bits(
    monkeypatch):
  # 42 examples in batches of 128: the rows run as one batch of 48 (rounded up to 8) on one
  # device when the model's bits allow it (the check is replaced here: it says yes), as 64 on
  # four devices, where it is not asked; the real check is tested in test_eval_loop.py.
  config, dataset, model, params = _partly_robust(n_test=42)
  config.eval.batch_size = 128
  asked, sizes, batches = [], [], loop.batches
  monkeypatch.setattr(loop, 'batch_invariance',
                      lambda *args: lambda size: asked.append(size) or True)
  monkeypatch.setattr(loop, 'batches', lambda *a, **k: [
      sizes.append(len(b[2])) or b for b in batches(*a, **k)])
  a, art_a = robust.evaluate(model, params, {}, dataset, config,
                             parallel.make_mesh(jax.devices()[:1]), progress=False)
  assert 48 in asked and 48 in sizes and 64 not in sizes
  asked.clear()
  sizes.clear()
  b, art_b = robust.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                             progress=False)
  assert not asked and 48 not in sizes and 64 in sizes
  assert a['worst_case_accuracy'] == b['worst_case_accuracy']


def test_attacks_in_stages_give_the_whole_attacks_verdicts_whatever_the_batches(monkeypatch):
  # APGD-T, FAB-T and Square run in stages in the evaluation (one target, one block of queries
  # each), every stage only on the examples not yet fooled, re-batched into smaller buckets. Per
  # example the verdicts are those of each whole attack on the whole test set in one batch
  # (stages.as_attack), with batch 8 on every device and with batch 20 and buckets of 4 on one.
  config, dataset, model, params = _partly_robust(n_test=42)
  config.eval.attacks = {
      'apgd_t': dict(name='apgd_t', eps=0.01, steps=3, num_targets=4),
      'fab_t': dict(name='fab_t', eps=0.02, steps=4, num_targets=4),
      'square': dict(name='square', eps=0.02, steps=30)}
  clean, each = _independent_per_example(config, dataset, model, params)
  rows = []
  real_run = loop.run

  def counting_run(fn, arrays, subset, *args, **kwargs):
    rows.append(len(subset))
    return real_run(fn, arrays, subset, *args, **kwargs)

  monkeypatch.setattr(loop, 'run', counting_run)
  a, art_a = robust.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                             progress=False)
  monkeypatch.setattr(loop, 'MIN_BUCKET', 4)
  config.eval.batch_size = 20
  b, art_b = robust.evaluate(model, params, {}, dataset, config,
                             parallel.make_mesh(jax.devices()[:1]), progress=False)
  for name, ok in each.items():
    assert 0 < ok.sum() < clean.sum(), (name, ok.sum())
    np.testing.assert_array_equal(art_a['per_example'][f'attack/{name}'], ok, err_msg=name)
    np.testing.assert_array_equal(art_b['per_example'][f'attack/{name}'], ok, err_msg=name)
    assert a['attacks'][name]['correct'] == b['attacks'][name]['correct'] == ok.sum()
  # Stages ran on fewer examples than the whole set: the fooled ones were dropped.
  assert min(rows) < 42 and rows.count(42) < len(rows)


def _batchnorm_setup():
  """A small WideResNet (BatchNorm) with running statistics of the training images, labelled by
  its own inference-mode predictions; an attack whose outcome changes with the BN mode."""
  config = helpers.quick_config(**{'model.name': 'wide_resnet', 'model.depth': 10,
                                   'model.width': 1})
  del config.eval.attacks['fgsm'], config.eval.attacks['pgd40x2']  # one attack: a cheap test
  config.eval.attacks.pgd20.update(eps=0.01, step_size=0.005)
  dataset = helpers.tiny_dataset(n_test=11, shape=(8, 8, 1))
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  v = helpers.init_variables(model, rng.root_key(0, rng.INIT), dataset.test_images.shape[1:])
  params, stats = v['params'], v['batch_stats']
  x_train = jnp.asarray(dataset.train_images.astype(np.float32) / 255)
  # One jitted update (40 eager passes of the network took ~10x longer).
  update = jax.jit(lambda s: model.apply({'params': params, 'batch_stats': s}, x_train,
                                         train=True, mutable=['batch_stats'])[1]['batch_stats'])
  for _ in range(40):  # running averages (momentum 0.9) converge to the training set's
    stats = update(stats)
  x = jnp.asarray(dataset.test_images.astype(np.float32) / 255)
  y = jnp.argmax(model.apply({'params': params, 'batch_stats': stats}, x, train=False), -1)
  dataset = dataclasses.replace(dataset, test_labels=np.asarray(y, np.int32))
  return config, dataset, model, params, stats


def test_evaluation_attacks_the_inference_model_whatever_the_training_bn_mode():
  config, dataset, model, params, stats = _batchnorm_setup()
  mesh = parallel.make_mesh()
  config.model.attack_bn_mode = 'eval'
  ref, art_ref = robust.evaluate(model, params, stats, dataset, config, mesh, progress=False)
  config.model.attack_bn_mode = 'train'  # the training attack's mode: not the evaluation's
  got, art = robust.evaluate(model, params, stats, dataset, config, mesh, progress=False)
  config.eval.batch_size = 4  # other batches, other padding (11 = 2 x 4 + 3)
  small, art_small = robust.evaluate(model, params, stats, dataset, config, mesh,
                                       progress=False)
  for k, v in art_ref['per_example'].items():
    np.testing.assert_array_equal(art['per_example'][k], v, err_msg=k)
    np.testing.assert_array_equal(art_small['per_example'][k], v, err_msg=k)
  # The reference is the inference-mode model attacked example by example.
  _, each = _independent_per_example(config, dataset, model, params, stats)
  for name, ok in each.items():
    assert 0 < ok.sum() < len(ok)
    np.testing.assert_array_equal(art_ref['per_example'][f'attack/{name}'], ok, err_msg=name)


def test_num_examples_limits_the_test_set():
  config = helpers.quick_config(**{'eval.num_examples': 10})
  dataset = helpers.tiny_dataset(n_test=37)
  model, params = _setup(config, dataset)
  results, _ = robust.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                                 progress=False)
  assert results['num_examples'] == 10


def test_suite_cascade_and_sanity_checks_use_the_primary_attack_wherever_it_ran(monkeypatch):
  # One evaluation (suite + sanity checks are the expensive part) checks the cascade's
  # bookkeeping, the report, and the sanity checks' inputs.
  # The suite's APGD-CE (20 steps) outranks the named attacks (2 steps): it is the primary, its
  # per-example results are the suite's first cascade stage, and no check is silently dropped.
  config, dataset, model, params = _partly_robust(
      n_test=24, **{'eval.suite': 'quick', 'eval.suite_eps': 0.01, 'eval.sanity_checks': True,
                    'eval.sanity_examples': 16})
  seen = {}
  real = sanity.run_checks

  def spy(*args, **kwargs):
    seen.update(kwargs)
    return real(*args, **kwargs)

  monkeypatch.setattr(sanity, 'run_checks', spy)
  results, art = robust.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                                   progress=False)
  suite = results['suite']
  assert [a['name'] for a in suite['attacks']] == ['apgd_ce', 'apgd_t']
  assert suite['correct'] == art['per_example']['suite'].sum() == round(suite['accuracy'] * 24)
  assert suite['attacks'][0]['attacked'] == round(results['clean_accuracy'] * 24)
  assert suite['attacks'][1]['attacked'] == suite['attacks'][0]['attacked'] - \
      suite['attacks'][0]['broken']
  assert results['worst_case_accuracy'] <= suite['accuracy']
  names = {c['name'] for c in results['sanity_checks']}
  assert {'outputs are logits', 'input gradients finite and non-zero', 'unbounded attack succeeds',
          'x_adv inside ball and [0,1]', 'accuracy falls with eps'} <= names
  assert all(c['verdict'] in ('PASS', 'WARN', 'FAIL', 'SKIPPED')
             for c in results['sanity_checks'])
  assert art['x_adv'].shape == art['x'].shape
  report_text = report.full_report(results, 'tiny')
  assert 'Sanity checks' in report_text and 'Suite `quick`' in report_text
  assert 'Upper bound' in report_text  # 'quick' is not the full standard suite

  cfg, primary = seen['primary']
  assert cfg['name'] == 'apgd_ce'
  first = results['suite']['attacks'][0]
  assert first['name'] == 'apgd_ce' and 0 < first['broken'] < first['attacked']
  # Robust after APGD-CE, example by example: clean-correct points it did not break.
  after_first = art['per_example']['clean'].copy()
  assert after_first.sum() == first['attacked']
  np.testing.assert_array_equal(primary, _after_first_stage(config, dataset, model, params)[:16])
  # The single-step check runs against the named FGSM, with both attacks named in its text.
  np.testing.assert_array_equal(seen['single_step'][1], art['per_example']['attack/fgsm'][:16])
  by_name = {c['name']: c for c in results['sanity_checks']}
  assert by_name['iterative >= single-step']['verdict'] in ('PASS', 'WARN', 'FAIL')
  assert 'apgd_ce' in by_name['iterative >= single-step']['detail']
  assert 'fgsm' in by_name['iterative >= single-step']['detail']
  assert 'apgd_ce-20' in by_name['attack converged']['detail']
  assert 'apgd_ce-40' in by_name['attack converged']['detail']  # what was really doubled
  assert by_name['black-box does not beat white-box']['verdict'] == 'SKIPPED'
  assert 'Square' in by_name['black-box does not beat white-box']['detail']
  assert by_name['attack converged']['examples'] == 16
  assert by_name['x_adv inside ball and [0,1]']['examples'] == 24 * 3 + first['attacked'] + \
      results['suite']['attacks'][1]['attacked']
  text = report.full_report(results)
  assert 'SKIPPED' in text and 'black-box does not beat white-box' in text


def _after_first_stage(config, dataset, model, params):
  """bool[n]: right on the clean input and under the suite's first attack, computed apart from
  the evaluation loop (same per-example keys, one unsharded batch)."""
  from robust_jax import suites  # pylint: disable=g-import-not-at-top
  name, cfg = suites.attacks(config.eval.suite, norm=config.eval.suite_norm,
                             eps=config.eval.suite_eps)[0]
  del name
  x = jnp.asarray(dataset.test_images.astype(np.float32) / 255)
  y = jnp.asarray(dataset.test_labels)
  fn = model_fns.logits_fn(model, params, {}, 'eval')
  root = rng.root_key(config.seed, rng.EVAL)
  keys = rng.example_keys(jax.random.fold_in(root, 1000), rng.ATTACK,
                          jnp.arange(len(y), dtype=jnp.int32))
  ok = np.asarray(jnp.argmax(fn(attacks.build(cfg)(fn, x, y, keys)), -1) == y)
  return ok & np.asarray(jnp.argmax(fn(x), -1) == y)


def test_fingerprint_covers_the_code_and_the_data(monkeypatch):
  config = helpers.quick_config()
  dataset = helpers.tiny_dataset(n_test=8, shape=(8, 8, 1))
  _, params = _setup(config, dataset)
  base = loop.fingerprint(config, params, {})
  other_data = helpers.quick_config(**{'data.source_dir': '/elsewhere'})
  assert loop.fingerprint(other_data, params, {}) != base
  monkeypatch.setattr(version, 'source_digest', lambda: 'an attack was fixed since')
  assert loop.fingerprint(config, params, {}) != base


def test_results_saved_by_older_code_are_not_reused(tmp_path, monkeypatch):
  config = helpers.quick_config()
  for a in config.eval.attacks.values():
    a.steps = 1
  dataset = helpers.tiny_dataset(n_test=16, shape=(8, 8, 1))
  model, params = _setup(config, dataset)
  mesh = parallel.make_mesh()
  robust.evaluate(model, params, {}, dataset, config, mesh, progress=False,
                    progress_dir=str(tmp_path))
  calls = {'n': 0}
  real_run = loop.run

  def counting_run(fn, *args, **kwargs):
    def counted(*a):
      calls['n'] += 1
      return fn(*a)
    return real_run(counted, *args, **kwargs)

  monkeypatch.setattr(loop, 'run', counting_run)
  robust.evaluate(model, params, {}, dataset, config, mesh, progress=False,
                    progress_dir=str(tmp_path))
  assert calls['n'] == 0  # same code: every batch read back
  monkeypatch.setattr(version, 'source_digest', lambda: 'new code')
  robust.evaluate(model, params, {}, dataset, config, mesh, progress=False,
                    progress_dir=str(tmp_path))
  assert calls['n'] == 2 * 4  # 2 batches x (clean + 3 attacks), all recomputed


def test_a_killed_evaluation_resumes_from_its_saved_batches(tmp_path, monkeypatch):
  config = helpers.quick_config(**{'eval.suite': 'quick', 'eval.suite_eps': 0.1})
  for a in config.eval.attacks.values():
    a.steps = 1
  dataset = helpers.tiny_dataset(n_test=40, shape=(8, 8, 1))  # small images: cheap compiles
  model, params = _setup(config, dataset)
  mesh = parallel.make_mesh()
  full, _ = robust.evaluate(model, params, {}, dataset, config, mesh, progress=False)

  calls = {'n': 0}
  real_run = loop.run

  def dying_run(fn, *args, **kwargs):  # the 6th jitted batch call "kills" the process
    def counting(*a):
      calls['n'] += 1
      if calls['n'] == 6:
        raise KeyboardInterrupt('killed')
      return fn(*a)
    return real_run(counting, *args, **kwargs)

  monkeypatch.setattr(loop, 'run', dying_run)
  with pytest.raises(KeyboardInterrupt):
    robust.evaluate(model, params, {}, dataset, config, mesh, progress=False,
                      progress_dir=str(tmp_path))
  assert calls['n'] == 6 and list(tmp_path.glob('*.npz'))
  calls['n'] = -10**6  # the rerun never dies; count its batch calls
  resumed, _ = robust.evaluate(model, params, {}, dataset, config, mesh, progress=False,
                                 progress_dir=str(tmp_path))
  rerun_calls = calls['n'] + 10**6
  calls['n'] = -10**6
  robust.evaluate(model, params, {}, dataset, config, mesh, progress=False)
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
  robust.evaluate(model, other, {}, dataset, config, mesh, progress=False,
                    progress_dir=str(tmp_path))
  assert calls['n'] + 10**6 == rerun_calls + 5


def test_tables_say_when_the_figure_is_only_an_upper_bound():
  base = {'num_examples': 10, 'clean_accuracy': 0.9, 'attacks': {}, 'worst_case_accuracy': 0.5,
          'worst_case_correct': 5}
  assert 'Upper bound' in robust.results_table(base)  # no suite at all
  cheap = {**base, 'suite': {'name': 'apgd', 'accuracy': 0.5, 'attacks': []}}
  assert 'Upper bound' in robust.results_table(cheap)
  assert 'upper bound' in robust.suite_table(cheap)
  full = {**base, 'suite': {'name': 'standard', 'accuracy': 0.5, 'attacks': []}}
  assert 'Upper bound' not in robust.results_table(full)
  assert 'upper bound' not in robust.suite_table(full)
