"""The defense zoo runner: dependency order, commands, failure propagation and the table."""

import json
import os

import pytest

from robust_jax import zoo
from tests.test_tables import make_repo


def _results(clean, naive, adaptive, worst, verdicts=('PASS',) * 3):
  return {'clean_accuracy': clean, 'worst_case_accuracy': worst, 'num_examples': 1000,
          'attacks': {'naive': {'accuracy': naive, 'metric': 'pgd40_linf_0.1_ce'},
                      **({'adaptive': {'accuracy': adaptive, 'metric': 'pgd40_linf_0.1_ce_bpda'}}
                         if adaptive is not None else {})},
          'suite': {'name': 'standard', 'accuracy': 0.5},
          'sanity_checks': [{'name': f'c{i}', 'verdict': v} for i, v in enumerate(verdicts)],
          'train_seconds_this_run': 12.3, 'devices': ['TFRT_CPU_0(id=0)']}


def test_every_config_exists_and_prerequisites_come_first():
  names = [r['name'] for r in zoo.ROWS]
  for r in zoo.ROWS:
    assert os.path.exists(os.path.join(zoo.ROOT, r['config'])), r['config']
    for n in r['needs']:
      assert names.index(n) < names.index(r['name'])
  order = [r['name'] for r in zoo._closure(['distillation'])]
  assert order == ['distillation_teacher', 'distillation']
  with pytest.raises(SystemExit, match='no row'):
    zoo._closure(['nope'])


def test_table_reads_results_and_names_failed_checks(tmp_path, monkeypatch):
  monkeypatch.setattr(zoo, 'ROOT', str(tmp_path))
  for name, res in [('standard', _results(0.9, 0.05, None, 0.04)),
                    ('bit_depth', _results(0.88, 0.7, 0.02, 0.02, ('PASS', 'FAIL', 'WARN')))]:
    os.makedirs(tmp_path / zoo.workdir(name))
    with open(tmp_path / zoo.workdir(name) / 'results.json', 'w') as f:
      json.dump(res, f)
  text = zoo.table()
  assert ('| standard (baseline) | 90.0 | 5.0 | 50.0 | standard suite | 4.0 | 3/3 PASS | 12 |'
          in text)
  assert '| bit_depth | 88.0 | 70.0 | 2.0 | pgd40_linf_0.1_ce_bpda | 2.0 | 1/3 PASS; FAIL: c1; ' \
         'WARN: c2 | 12 |' in text
  assert 'Not run yet: pgd_at' in text
  assert '--workdir=workdirs/zoo/bit_depth' in text


def test_run_skips_dependents_of_a_failed_run(tmp_path, monkeypatch):
  monkeypatch.setattr(zoo, 'ROOT', str(tmp_path))
  calls = []

  def fake_call(args, cwd, stdout, stderr):
    calls.append(args)
    return 1  # every run fails
  monkeypatch.setattr(zoo.subprocess, 'call', fake_call)
  failed = zoo.run(['distillation'], jobs=2, examples=10, extra=[])
  assert failed == ['distillation', 'distillation_teacher']
  assert len(calls) == 1 and '--workdir=workdirs/zoo/distillation_teacher' in calls[0]
  assert '--config.eval.num_examples=10' in calls[0]


def _write_zoo_results(root, name, version):
  res = _results(0.9, 0.5, 0.4, 0.4)
  if version is not None:
    res['code_version'] = version
  os.makedirs(root / zoo.workdir(name))
  with open(root / zoo.workdir(name) / 'results.json', 'w') as f:
    json.dump(res, f)


def test_table_shows_each_rows_code_version_and_flags_stale_rows(tmp_path, monkeypatch):
  commits = make_repo(str(tmp_path))
  monkeypatch.setattr(zoo, 'ROOT', str(tmp_path))
  for name, version in [('standard', commits['after']), ('pgd_at', commits['old']),
                        ('trades', commits['after'] + '+dirty'), ('mart', None)]:
    _write_zoo_results(tmp_path, name, version)
  text = zoo.table()
  lines = text.splitlines()
  assert lines[0].endswith('| train (s) | code |')
  assert f'| 12 | {commits["after"][:7]} |' in next(x for x in lines if x.startswith('| standard'))
  assert f'| 12 | {commits["old"][:7]} (stale) |' in next(x for x in lines
                                                           if x.startswith('| pgd_at'))
  assert '+dirty (stale) |' in next(x for x in lines if x.startswith('| trades'))
  assert '| unknown (stale) |' in next(x for x in lines if x.startswith('| mart'))
  assert f'- pgd_at: stale, older than the last change to the evaluation code ' \
         f'({commits["change"][:7]}).' in lines
  assert not any(x.startswith('- standard: stale') for x in lines)
  assert f'older than {commits["change"][:7]}, the last change' in text
  assert '--rerun_stale' in text


def test_run_reruns_stale_rows_only_when_asked(tmp_path, monkeypatch):
  commits = make_repo(str(tmp_path))
  monkeypatch.setattr(zoo, 'ROOT', str(tmp_path))
  _write_zoo_results(tmp_path, 'standard', commits['after'])
  _write_zoo_results(tmp_path, 'pgd_at', commits['old'])
  calls = []

  def fake_call(args, cwd, stdout, stderr):
    calls.append(next(a for a in args if a.startswith('--workdir=')))
    return 0
  monkeypatch.setattr(zoo.subprocess, 'call', fake_call)
  assert zoo.run(['standard', 'pgd_at'], jobs=1, examples=10, extra=[]) == []
  assert not calls  # both have results: kept
  assert zoo.run(['standard', 'pgd_at'], jobs=1, examples=10, extra=[], rerun_stale=True) == []
  assert calls == ['--workdir=workdirs/zoo/pgd_at']
  assert zoo.main(['run', '--only=standard,pgd_at', '--rerun_stale',
                   '--workdirs=workdirs/zoo']) == 0
  assert calls == ['--workdir=workdirs/zoo/pgd_at'] * 2


ADVERSARIALLY_TRAINED = ('pgd_at', 'fgsm_rs', 'free_at', 'trades', 'mart', 'awp', 'ensemble_at')


@pytest.mark.parametrize('name', ADVERSARIALLY_TRAINED)
def test_adversarially_trained_rows_run_the_full_standard_suite(name):
  import importlib  # pylint: disable=g-import-not-at-top
  row = zoo.BY_NAME[name]
  config = importlib.import_module(row['config'][:-3].replace('/', '.')).get_config()
  assert config.eval.suite == 'standard'
  assert not [f for f in row['flags'] if f.startswith('--config.eval.suite')]


def test_rows_without_the_full_suite_are_marked_as_upper_bounds(tmp_path, monkeypatch):
  monkeypatch.setattr(zoo, 'ROOT', str(tmp_path))
  for name, suite in (('pgd_at', 'standard'), ('jpeg', '')):
    os.makedirs(tmp_path / zoo.workdir(name))
    res = _results(0.9, 0.6, 0.5, 0.4)
    res['suite'] = {'name': suite, 'accuracy': 0.4} if suite else None
    with open(tmp_path / zoo.workdir(name) / 'results.json', 'w') as f:
      json.dump(res, f)
  text = zoo.table(['pgd_at', 'jpeg'], code=zoo.CodeCheck(str(tmp_path)))
  rows = {line.split('|')[1].strip(): line for line in text.splitlines() if line.startswith('| ')}
  assert '40.0 †' in rows['jpeg'] and '†' not in rows['pgd_at']
  assert 'Upper bound' in text and 'jpeg' in text.split('Upper bound')[1]
