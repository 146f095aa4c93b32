"""The defense zoo runner: dependency order, commands, failure propagation and the table."""

import json
import os

import pytest

from robust_jax import zoo


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
