"""Paper tables (robust_jax/tables/, configs/papers/*.py, launch.py --mode=table).

Every row of every paper config builds and validates and its table metadata points at metrics
the row measures; the table renders from sample results.json files (published and measured
figures, deltas, missing and skipped rows); rows run in order after what they need, skip rows
whose data is unavailable, and leave rows with results alone; `early_stopping` results come out
of a real run with train.co_action='best'.
"""

import glob
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from robust_jax import data as data_lib
from robust_jax import errors
from robust_jax import experiment
from robust_jax import tables
from robust_jax import validation
from robust_jax.data import extra as extra_data
from robust_jax.tables import layouts
from robust_jax.tables import provenance
from robust_jax.tables import runner
from tests import conftest
from tests import helpers
from tests.test_tables import make_repo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', 'papers', '*.py'))
                     if os.path.basename(p) not in ('__init__.py', 'common.py'))
ROWS = [(p, r) for p in PAPER_FILES for r in runner.load_module(p).ROWS]


def test_the_papers_of_the_issue_are_all_there():
  names = {runner.load_module(p).PAPER for p in PAPER_FILES}
  assert names == {'madry2018', 'wong2020_fast', 'trades2019', 'rice2020', 'croce2019',
                   'papernot2016_distillation', 'gowal2020', 'rebuffi2021', 'gowal2021',
                   'wang2023'}
  for p in PAPER_FILES:
    m = runner.load_module(p)
    scales = {m.ROWS[r]().paper.scale for r in m.ROWS}
    assert scales == {'cpu', 'full'}
    for r in m.ROWS:  # every full row has a CPU-sized cut
      if m.ROWS[r]().paper.scale == 'full':
        assert any(m.ROWS[x]().paper.of == r for x in m.ROWS), (m.PAPER, r)


@pytest.mark.parametrize('path,row', ROWS, ids=[f'{os.path.basename(p)[:-3]}:{r}'
                                                 for p, r in ROWS])
def test_every_row_builds_validates_and_names_metrics_it_measures(path, row, tmp_path):
  module = runner.load_module(path)
  c = module.get_config(row)
  if c.data.extra.fraction and c.data.extra.path is None:
    # A row on the papers' additional data, which is not shipped: it fails until given a path.
    with pytest.raises(errors.ConfigError, match='--config.data.extra.path='):
      validation.validate(c, 1)
    assert c.paper.scale == 'full'
    np.savez(tmp_path / 'extra.npz', image=np.zeros((1, 32, 32, 3), np.uint8),
             label=np.zeros(1, np.int64))
    c.data.extra.path = str(tmp_path / 'extra.npz')
  if c.paper.scale == 'cpu' and extra_data.active(c.data.extra):
    assert c.data.extra.synthetic and 'SYNTHETIC' in c.paper.cut  # said in the table
  validation.validate(c, 1)
  if c.train.batch_size % 4 == 0:
    validation.validate(c, 4)
  p = c.paper
  assert p.row == row and p.paper == module.PAPER and p.scale in ('cpu', 'full')
  assert p.title and p.source and p.epochs > 0
  if p.scale == 'cpu':
    assert p.cut, 'a CPU-sized row says how it is cut down'
    assert not p.of or module.ROWS[p.of]().paper.scale == 'full'
  for metric in list(p.published) + list(p.labels):
    name = metric[len('best_'):] if metric.startswith('best_') else metric
    if metric.startswith('best_'):
      assert c.train.co_action == 'best' and c.train.monitor_examples > 0
    if name == 'suite':
      # (a CPU cut may leave the suite out: its table then shows '-' beside the paper's figure)
      assert c.eval.suite or p.scale == 'cpu' or metric not in p.published, row
    elif name != 'clean':  # an attack of this row, or one its CPU cut leaves out
      full = module.ROWS[p.of]() if p.of else c
      assert name in c.eval.attacks or name in full.eval.attacks, (row, name)
  for value in p.published.values():
    assert 0 <= value <= 100
  if p.needs:
    assert p.needs in module.ROWS and c.defense.teacher.endswith(p.needs)
  # The docstring states the published figures the row carries.
  for value in p.published.values():
    assert f'{value:.2f}'.rstrip('0').rstrip('.') in module.__doc__, (row, value)


def test_rows_are_selected_by_scale_or_name_with_what_they_need():
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'papernot2016_distillation.py'))
  assert runner.select_rows(m, 'cpu') == ['mnist_teacher_cpu', 'mnist_student_cpu']
  assert runner.select_rows(m, 'mnist_student') == ['mnist_student']
  assert runner.with_needs(m, ['mnist_student_cpu']) == ['mnist_teacher_cpu',
                                                         'mnist_student_cpu']
  with pytest.raises(errors.ConfigError, match='--table_rows'):
    runner.select_rows(m, 'nope')
  c = runner.row_config(m, 'mnist_student_cpu', {'train.epochs': 2}, '/base')
  assert c.train.epochs == 2 and c.defense.teacher == '/base/mnist_teacher_cpu'
  with pytest.raises(errors.ConfigError, match='does not apply to row'):
    runner.row_config(m, 'mnist_student_cpu', {'eval.attacks.pgd50x10.steps': 2}, '/base')


def _sample_results(module, row, clean, attacks, suite=None, early=None):
  c = module.get_config(row).to_dict()
  r = {'config': c, 'num_examples': 1000, 'clean_accuracy': clean, 'train_steps': 5940,
       'train_seconds_total': 125.0, 'eval_seconds': 61.0, 'devices': ['TFRT_CPU_0'],
       'attacks': {k: {'accuracy': v, 'metric': f'{k}_metric'} for k, v in attacks.items()},
       'worst_case_accuracy': min([clean, *attacks.values()] + ([suite] if suite else []))}
  if suite is not None:
    r['suite'] = {'name': c['eval']['suite'], 'accuracy': suite,
                  'attacks': [{'name': 'apgd_ce'}, {'name': 'apgd_t'}]}
  if early is not None:
    r['early_stopping'] = early
  return r


def _write(base, row, results):
  os.makedirs(os.path.join(base, row))
  with open(os.path.join(base, row, 'results.json'), 'w') as f:
    json.dump(results, f)


def test_table_renders_published_measured_and_delta_from_results_files(tmp_path):
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'wong2020_fast.py'))
  base = str(tmp_path)
  _write(base, 'mnist_fgsm_rs_cpu',
         _sample_results(m, 'mnist_fgsm_rs_cpu', 0.9812, {'pgd50x10': 0.8734}, suite=0.8203))
  co = _sample_results(m, 'fmnist_co_cpu', 0.838, {'pgd50x10': 0.194})
  co['monitor'] = {'co_action': 'log', 'stopped_at': None, 'collapses': [
      {'epoch': 8.0, 'pgd_accuracy': 0.453, 'best_pgd_accuracy': 0.723}]}
  _write(base, 'fmnist_co_cpu', co)
  rows = runner.select_rows(m, 'cpu')
  text = layouts.render(m, rows, base, skipped={'cifar10_fgsm_rs_cpu': 'no CIFAR-10 here'})
  lines = text.splitlines()
  assert layouts.HEADER in lines
  clean = next(line for line in lines if line.startswith('| mnist_fgsm_rs_cpu |'))
  assert '| 98.50 | 98.12 | -0.38 |' in clean and '2m05s + 1m01s' in clean
  assert '| 10 / 10 | 1000 |' in clean  # 5940 steps of 100 over 59,488 images: 10 epochs
  pgd = next(line for line in lines if 'PGD-50 x 10 restarts, step 0.01' in line
             and '88.77' in line)
  assert '| 88.77 | 87.34 | -1.43 |' in pgd and 'pgd50x10_metric' in pgd
  aa = next(line for line in lines if '82.93' in line)
  assert '| 82.93 | 82.03 | -0.90 |' in aa and 'standard suite (apgd_ce, apgd_t)' in aa
  # A row without published figures shows '-' there; its collapse is noted.
  co_line = next(line for line in lines if line.startswith('| fmnist_co_cpu |'))
  assert '| - | 83.80 | - |' in co_line
  assert any('catastrophic overfitting detected at epoch 8' in line for line in lines)
  assert 'Could not run cifar10_fgsm_rs_cpu here: no CIFAR-10 here' in text
  assert 'Not run yet: cifar10_co_cpu, fmnist_fgsm_rs_cpu, fmnist_co_rollback_cpu.' in text


def test_table_reads_the_best_checkpoint_figures_of_early_stopping(tmp_path):
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'rice2020.py'))
  early = {'clean_accuracy': 0.81, 'step': 4100, 'attacks': {
      'pgd10': {'accuracy': 0.52, 'metric': 'pgd10_linf'}}}
  _write(str(tmp_path), 'cifar10_pgd10',
         _sample_results(m, 'cifar10_pgd10', 0.84, {'pgd10': 0.46}, early=early))
  text = layouts.render(m, ['cifar10_pgd10'], str(tmp_path))
  best = next(line for line in text.splitlines() if 'best checkpoint' in line)
  assert '| 53.49 | 52.00 | -1.49 |' in best and 'weights of step 4100' in best
  final = next(line for line in text.splitlines() if 'final checkpoint' in line)
  assert '| 45.59 | 46.00 | +0.41 |' in final


def test_epochs_column_shows_the_trained_length_and_the_epoch_of_the_weights(tmp_path):
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'wong2020_fast.py'))
  base = str(tmp_path)
  # (60,000 - 512 monitored) // 100 = 594 steps an epoch. The rollback row trained 8 epochs
  # (stopped at step 4752) and returned the weights of step 1782, epoch 3: train_steps is the
  # step of the returned weights.
  rb = _sample_results(m, 'fmnist_co_rollback_cpu', 0.819, {'pgd50x10': 0.696})
  rb['train_steps'] = 1782
  rb['monitor'] = {'co_action': 'rollback', 'stopped_at': 4752, 'rolled_back_to': 1782,
                   'collapses': [{'epoch': 8.0, 'pgd_accuracy': 0.453,
                                  'best_pgd_accuracy': 0.723}]}
  _write(base, 'fmnist_co_rollback_cpu', rb)
  _write(base, 'fmnist_co_cpu', _sample_results(m, 'fmnist_co_cpu', 0.829, {'pgd50x10': 0.196}))
  text = layouts.render(m, ['fmnist_co_cpu', 'fmnist_co_rollback_cpu'], base)
  lines = text.splitlines()
  line = next(x for x in lines if x.startswith('| fmnist_co_rollback_cpu |'))
  assert '| 8 / 10 (weights of epoch 3) | 1000 |' in line, line
  line = next(x for x in lines if x.startswith('| fmnist_co_cpu |'))
  assert '| 10 / 10 | 1000 |' in line, line  # trained to the end: one figure
  assert 'stopped at step 4752, weights of step 1782' in text
  # co_action 'best': the final weights are the table's; the best epoch's weights are noted.
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'rice2020.py'))
  spe = (50000 - 1000) // 128
  best = _sample_results(m, 'cifar10_pgd10', 0.84, {'pgd10': 0.46},
                         early={'clean_accuracy': 0.81, 'step': 103 * spe, 'epoch': 103.0,
                                'attacks': {'pgd10': {'accuracy': 0.52, 'metric': 'pgd10'}}})
  best['train_steps'] = 200 * spe
  _write(base, 'cifar10_pgd10', best)
  line = next(x for x in layouts.render(m, ['cifar10_pgd10'], base).splitlines()
              if x.startswith('| cifar10_pgd10 |'))
  assert '| 200 / 200 (best-epoch rows: weights of epoch 103) | 1000 |' in line, line


def test_table_shows_each_rows_code_version_and_flags_stale_rows(tmp_path):
  repo, base = tmp_path / 'repo', str(tmp_path / 'runs')
  commits = make_repo(str(repo))
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'croce2019.py'))
  fresh = _sample_results(m, 'fmnist_plain_cpu', 0.91, {'pgd40x10': 0.02}, suite=0.01)
  fresh['code_version'] = commits['after']
  old = _sample_results(m, 'fmnist_at_cpu', 0.88, {'pgd40x10': 0.74}, suite=0.73)
  old['code_version'] = commits['old']
  _write(base, 'fmnist_plain_cpu', fresh)
  _write(base, 'fmnist_at_cpu', old)
  text = layouts.render(m, ['fmnist_plain_cpu', 'fmnist_at_cpu'], base,
                       code=provenance.CodeCheck(str(repo)))
  lines = text.splitlines()
  assert layouts.HEADER in lines and layouts.HEADER.endswith('| code |')
  plain = next(x for x in lines if x.startswith('| fmnist_plain_cpu |'))
  assert plain.endswith(f'| 2m05s + 1m01s | {commits["after"][:7]} |'), plain
  at = next(x for x in lines if x.startswith('| fmnist_at_cpu |'))
  assert at.endswith(f'| {commits["old"][:7]} (stale) |'), at
  assert all(x.count('|') == layouts.HEADER.count('|') for x in lines if x.startswith('| '))
  assert (f'- fmnist_at_cpu: stale, older than the last change to the evaluation code '
          f'({commits["change"][:7]}).') in lines
  assert not any(x.startswith('- fmnist_plain_cpu: stale') for x in lines)
  assert '--table_rerun_stale' in text
  # A +dirty or unknown version is flagged too.
  for version, cell in [(commits['after'] + '+dirty', f'{commits["after"][:7]}+dirty (stale)'),
                        (None, 'unknown (stale)')]:
    fresh['code_version'] = version
    with open(os.path.join(base, 'fmnist_plain_cpu', 'results.json'), 'w') as f:
      json.dump(fresh, f)
    text = layouts.render(m, ['fmnist_plain_cpu'], base, code=provenance.CodeCheck(str(repo)))
    assert f'| {cell} |' in text and '- fmnist_plain_cpu: stale, ' in text


def test_rerun_stale_runs_the_flagged_rows_again_and_keeps_the_others(tmp_path, monkeypatch):
  repo, base = tmp_path / 'repo', str(tmp_path / 'runs')
  commits = make_repo(str(repo))
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'croce2019.py'))
  for row, version in [('fmnist_plain_cpu', commits['after']), ('fmnist_at_cpu', commits['old'])]:
    r = _sample_results(m, row, 0.9, {'pgd40x10': 0.5}, suite=0.4)
    r['code_version'] = version
    _write(base, row, r)
  calls = []

  def fake_run(config, workdir):
    calls.append(config.paper.row)
    r = _sample_results(m, config.paper.row, 0.9, {'pgd40x10': 0.5}, suite=0.4)
    r['code_version'] = commits['after']
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(r, f)

  rows = ['fmnist_plain_cpu', 'fmnist_at_cpu']
  validate = lambda c: validation.validate(c, 1)  # noqa: E731
  code = provenance.CodeCheck(str(repo))
  runner.run_rows(m, rows, base, {}, validate, fake_run, code=code)
  assert not calls  # without the option, stale rows are collected as they are
  runner.run_rows(m, rows, base, {}, validate, fake_run, rerun_stale=True, code=code)
  assert calls == ['fmnist_at_cpu']
  # Through run_table (what launch.py --table_rerun_stale calls), against the repository
  # runner.ROOT names: the rerun row is no longer flagged.
  calls.clear()
  monkeypatch.setattr(provenance, 'ROOT', str(repo))
  old = _sample_results(m, 'fmnist_at_cpu', 0.9, {'pgd40x10': 0.5}, suite=0.4)
  old['code_version'] = commits['old']
  with open(os.path.join(base, 'fmnist_at_cpu', 'results.json'), 'w') as f:
    json.dump(old, f)
  path = os.path.join(ROOT, 'configs', 'papers', 'croce2019.py')
  text, _ = tables.run_table(path, 'cpu', base, {}, run=True, validate=validate,
                             run_fn=fake_run, rerun_stale=False)
  assert not calls and '(stale)' in text
  text, _ = tables.run_table(path, 'cpu', base, {}, run=True, validate=validate,
                             run_fn=fake_run, rerun_stale=True)
  assert calls == ['fmnist_at_cpu'] and '(stale)' not in text


def test_rows_run_after_their_needs_and_skip_missing_data_and_finished_rows(tmp_path):
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'papernot2016_distillation.py'))
  base = str(tmp_path)
  calls = []

  def fake_run(config, workdir):
    calls.append((config.paper.row, workdir, config.defense.teacher))
    if config.paper.row == 'mnist_teacher':
      raise data_lib.DatasetUnavailableError('no MNIST here')
    _write(base, config.paper.row, {'config': config.to_dict()})

  skipped = runner.run_rows(m, runner.with_needs(m, ['mnist_student', 'mnist_student_cpu']),
                            base, {}, lambda c: validation.validate(c, 1), fake_run)
  assert [c[0] for c in calls] == ['mnist_teacher', 'mnist_teacher_cpu', 'mnist_student_cpu']
  assert calls[2][2] == os.path.join(base, 'mnist_teacher_cpu')
  assert skipped == {'mnist_teacher': 'no MNIST here',
                     'mnist_student': 'needs mnist_teacher, which did not run'}
  calls.clear()
  runner.run_rows(m, ['mnist_teacher_cpu', 'mnist_student_cpu'], base, {},
                  lambda c: validation.validate(c, 1), fake_run)
  assert not calls  # both have results.json: collected, not rerun


def test_a_bad_override_stops_the_table_before_any_row_runs(tmp_path):
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'croce2019.py'))
  with pytest.raises(errors.ConfigError, match='train.epochs'):
    runner.run_rows(m, ['fmnist_plain_cpu', 'fmnist_at_cpu'], str(tmp_path),
                    {'train.epochs': -1}, lambda c: validation.validate(c, 1),
                    lambda c, w: pytest.fail('ran a row'))


def test_launch_table_mode_collects_without_running(tmp_path):
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'croce2019.py'))
  _write(str(tmp_path), 'fmnist_plain_cpu',
         _sample_results(m, 'fmnist_plain_cpu', 0.91, {'pgd40x10': 0.02}, suite=0.01))
  out = subprocess.run(
      [sys.executable, 'launch.py', '--mode=table', '--config=configs/papers/croce2019.py',
       f'--workdir={tmp_path}', '--table_run=false', '--table_rerun_stale=false'], cwd=ROOT,
      env=conftest.SUBPROCESS_ENV,
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '| 90.50 | 91.00 | +0.50 |' in out.stdout
  assert 'Not run yet: fmnist_at_cpu.' in out.stdout
  assert '| unknown (stale) |' in out.stdout  # the sample has no code_version
  with open(tmp_path / 'table.md') as f:
    assert '| 90.50 | 91.00 | +0.50 |' in f.read()


def test_co_action_best_evaluates_the_best_epoch_beside_the_final_weights(tmp_path):
  config = helpers.quick_config(**{
      'model.name': 'small_cnn', 'defense.name': 'standard', 'train.steps': 4,
      'train.monitor_examples': 16, 'train.co_action': 'best',
      'train.monitor_attack.steps': 1, 'eval.num_examples': 16})
  with config.unlocked():
    config.eval.attacks = ml_collections.ConfigDict(
        {'pgd': dict(name='pgd', eps=0.1, steps=1, step_size=0.1)})
  results = experiment.train_and_evaluate(config, str(tmp_path), progress=False)
  early = results['early_stopping']
  assert early['step'] == 4 and early['epoch'] == results['monitor']['best']['epoch']
  # One monitored epoch: the best weights are the final ones, evaluated once and reported twice.
  assert early['same_as_final'] and not (tmp_path / 'eval_progress_best').exists()
  assert early['eval_seconds'] == 0 < results['eval_seconds']  # the table's time counts it once
  assert not set(early) & set(experiment._FINAL_ONLY)  # pylint: disable=protected-access
  assert early['clean_accuracy'] == results['clean_accuracy']
  assert early['attacks']['pgd']['accuracy'] == results['attacks']['pgd']['accuracy']
  assert layouts.measured(results, 'best_pgd') == results['attacks']['pgd']['accuracy']
  assert results['train_seconds_total'] > 0
  assert jax.process_count() == 1


@pytest.mark.slow
@pytest.mark.skipif(not data_lib.sources.shared_copy('cifar10'),
                    reason='no ../shared/datasets/cifar10 beside this checkout')
def test_a_cpu_cut_of_the_modern_recipe_runs_with_its_synthetic_extra_data(tmp_path, tfds_dir):
  m = runner.load_module(os.path.join(ROOT, 'configs', 'papers', 'wang2023.py'))
  c = m.get_config('cifar10_wrn28_10_edm20m_cpu')
  assert (c.data.name, c.model.name, c.defense.name) == ('cifar10', 'dm_wide_resnet', 'trades')
  assert c.defense.label_smoothing == 0.1 and c.data.extra.fraction == 0.7
  c.data.data_dir = str(tfds_dir)
  c.train.steps, c.eval.num_examples, c.eval.sanity_checks = 3, 20, False
  # Smaller batches (16, 70% synthetic; eval: the 20 images, not padded to 200) and a 2-step
  # TRADES inner attack: the same code paths at a fraction of the compute.
  c.train.batch_size, c.train_attack.steps, c.eval.batch_size = 16, 2, 20
  c.eval.attacks.pgd20.steps = 2
  results = experiment.train_and_evaluate(c, str(tmp_path / c.paper.row), progress=False)
  assert results['train_steps'] == 3 and 0 <= results['clean_accuracy'] <= 1
  assert os.path.exists(os.path.join(tfds_dir, 'robust_jax_extra',
                                     'synthetic_cifar10_4000.npz'))
  assert results['config']['data']['extra']['synthetic'] == 4000
  text = layouts.render(m, ['cifar10_wrn28_10_edm20m_cpu'], str(tmp_path))
  assert "4,000 SYNTHETIC images (noisy copies of CIFAR-10 training images), not the paper's" \
      in text
