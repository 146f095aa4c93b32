"""The defense zoo (configs/zoo.py, run and rendered by robust_jax/tables/): its rows and their
prerequisites, dependency order, commands, failure propagation, the table, and the deprecated
`python -m robust_jax.zoo` alias."""

import json
import os
import subprocess
import sys

import pytest

from robust_jax import errors
from robust_jax import tables
from robust_jax import validation
from robust_jax import zoo
from robust_jax.tables import layouts
from robust_jax.tables import provenance
from robust_jax.tables import runner
from tests import conftest
from tests.test_tables import make_repo

# ml_collections' config_flags loads config files with importlib's deprecated load_module.
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')
CONFIG = 'configs/zoo.py'
CONFIG_PATH = os.path.join(runner.ROOT, CONFIG)  # the tests run in tmp_path
ZOO = runner.load_module(CONFIG_PATH)
BASE = 'workdirs/zoo'  # relative, as launch.py takes it: the tests run in tmp_path


def _validate(c):
  validation.validate(c, 1)


def _write(root, name, results):
  os.makedirs(root / BASE / name)
  with open(root / BASE / name / 'results.json', 'w') as f:
    json.dump(results, f)


def _results(clean, naive, adaptive, worst, verdicts=('PASS',) * 3):
  return {'clean_accuracy': clean, 'worst_case_accuracy': worst, 'num_examples': 1000,
          'attacks': {'naive': {'accuracy': naive, 'metric': 'pgd40_linf_0.1_ce'},
                      **({'adaptive': {'accuracy': adaptive, 'metric': 'pgd40_linf_0.1_ce_bpda'}}
                         if adaptive is not None else {})},
          'suite': {'name': 'standard', 'accuracy': 0.5},
          'sanity_checks': [{'name': f'c{i}', 'verdict': v} for i, v in enumerate(verdicts)],
          'train_seconds_this_run': 12.3, 'devices': ['TFRT_CPU_0(id=0)']}


def test_every_config_exists_and_prerequisites_come_first():
  names = list(ZOO.ROWS)
  for r in names:
    c = ZOO.get_config(r)  # every row builds and validates (but an ensemble: its members first)
    if not runner.needs(c.paper):
      validation.validate(c, 1)
    for n in runner.needs(c.paper):
      assert names.index(n) < names.index(r)
  order = runner.with_needs(ZOO, ['distillation'])
  assert order == ['distillation_teacher', 'distillation']
  with pytest.raises(ValueError, match='no row'):
    ZOO.get_config('nope')
  with pytest.raises(errors.ConfigError, match='--table_rows'):
    runner.select_rows(ZOO, 'nope')


def test_table_reads_results_and_names_failed_checks(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for name, res in [('standard', _results(0.9, 0.05, None, 0.04)),
                    ('bit_depth', _results(0.88, 0.7, 0.02, 0.02, ('PASS', 'FAIL', 'WARN')))]:
    _write(tmp_path, name, res)
  text = layouts.render(ZOO, runner.select_rows(ZOO, 'cpu'), BASE)
  assert ('| standard (baseline) | 90.0 | 5.0 | 50.0 | standard suite | 4.0 | 3/3 PASS | 12 |'
          in text)
  assert '| bit_depth | 88.0 | 70.0 | 2.0 | pgd40_linf_0.1_ce_bpda | 2.0 | 1/3 PASS; FAIL: c1; ' \
         'WARN: c2 | 12 |' in text
  assert 'Not run yet: pgd_at' in text
  assert '--workdir=workdirs/zoo/bit_depth' in text


def test_run_skips_dependents_of_a_failed_run(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  calls = []

  def fake_call(args, cwd, stdout, stderr):
    calls.append(args)
    return 1  # every run fails
  monkeypatch.setattr(runner.subprocess, 'call', fake_call)
  # What launch.py --mode=table --config=configs/zoo.py --table_rows=distillation
  # --table_jobs=2 --config.eval.num_examples=10 does.
  _, skipped = tables.run_table(CONFIG_PATH, 'distillation', BASE, {'eval.num_examples': 10},
                                run=True, validate=_validate, run_fn=None, jobs=2)
  failed = sorted(skipped)
  assert failed == ['distillation', 'distillation_teacher']
  assert len(calls) == 1 and '--workdir=workdirs/zoo/distillation_teacher' in calls[0]
  assert '--config.eval.num_examples=10' in calls[0]


def _write_zoo_results(root, name, version):
  res = _results(0.9, 0.5, 0.4, 0.4)
  if version is not None:
    res['code_version'] = version
  _write(root, name, res)


def test_table_shows_each_rows_code_version_and_flags_stale_rows(tmp_path, monkeypatch):
  commits = make_repo(str(tmp_path))
  monkeypatch.chdir(tmp_path)
  for name, version in [('standard', commits['after']), ('pgd_at', commits['old']),
                        ('trades', commits['after'] + '+dirty'), ('mart', None)]:
    _write_zoo_results(tmp_path, name, version)
  text = layouts.render(ZOO, list(ZOO.ROWS), BASE, code=provenance.CodeCheck(str(tmp_path)))
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
  assert '--table_rerun_stale' in text


def test_run_reruns_stale_rows_only_when_asked(tmp_path, monkeypatch):
  commits = make_repo(str(tmp_path))
  monkeypatch.chdir(tmp_path)
  _write_zoo_results(tmp_path, 'standard', commits['after'])
  _write_zoo_results(tmp_path, 'pgd_at', commits['old'])
  calls = []

  def fake_call(args, cwd, stdout, stderr):
    calls.append(next(a for a in args if a.startswith('--workdir=')))
    return 0
  monkeypatch.setattr(runner.subprocess, 'call', fake_call)
  code = provenance.CodeCheck(str(tmp_path))
  run = runner.launcher(CONFIG_PATH, {})
  assert runner.run_rows(ZOO, ['standard', 'pgd_at'], BASE, {}, _validate, run, code=code) == {}
  assert not calls  # both have results: kept
  assert runner.run_rows(ZOO, ['standard', 'pgd_at'], BASE, {}, _validate, run,
                         rerun_stale=True, code=code) == {}
  assert calls == ['--workdir=workdirs/zoo/pgd_at']
  # What launch.py --mode=table --config=configs/zoo.py --table_rows=standard,pgd_at
  # --table_rerun_stale --table_jobs=2 does, against the repository runner.ROOT names.
  monkeypatch.setattr(provenance, 'ROOT', str(tmp_path))
  _, skipped = tables.run_table(CONFIG_PATH, 'standard,pgd_at', BASE, {}, run=True,
                                validate=_validate, run_fn=None, rerun_stale=True, jobs=2)
  assert skipped == {}
  assert calls == ['--workdir=workdirs/zoo/pgd_at'] * 2


def test_the_old_zoo_command_runs_the_table_command(monkeypatch, capsys):
  calls = []

  def fake_call(args, cwd):
    calls.append((args, cwd))
    return 0
  monkeypatch.setattr(zoo.subprocess, 'call', fake_call)
  assert zoo.main(['run', '--only=standard,pgd_at', '--rerun_stale',
                   '--workdirs=workdirs/zoo']) == 0
  launch = [sys.executable, os.path.join(runner.ROOT, 'launch.py'), '--mode=table',
            '--config=configs/zoo.py']
  assert calls == [(launch + ['--table_rows=standard,pgd_at', '--table_rerun_stale'],
                    runner.ROOT)]
  assert 'python launch.py --mode=table --config=configs/zoo.py' in capsys.readouterr().err
  # RESULTS.md's commands: the cuts become overrides, the flags after -- go to launch.py.
  calls.clear()
  cut = ['--examples=500', '--epochs=1', '--', '--config.eval.sanity_examples=100']
  assert zoo.main(['run', '--jobs=2', *cut]) == 0
  assert zoo.main(['table', *cut]) == 0
  overrides = ['--config.eval.num_examples=500', '--config.paper.passes=1',
               '--config.eval.sanity_examples=100']
  assert [args for args, _ in calls] == [launch + ['--table_jobs=2'] + overrides,
                                         launch + ['--table_run=false'] + overrides]
  assert zoo.main(['run', '--force']) == 2 and len(calls) == 2  # gone: says so, runs nothing


ADVERSARIALLY_TRAINED = ('pgd_at', 'fgsm_rs', 'free_at', 'trades', 'mart', 'awp', 'ensemble_at')


@pytest.mark.parametrize('name', ADVERSARIALLY_TRAINED)
def test_adversarially_trained_rows_run_the_full_standard_suite(name):
  config = runner.row_config(ZOO, name, {}, BASE)
  assert config.eval.suite == 'standard'
  command = runner.row_command(CONFIG, config, f'{BASE}/{name}', {})
  assert not [f for f in command if f.startswith('--config.eval.suite')]


def test_rows_without_the_full_suite_are_marked_as_upper_bounds(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for name, suite in (('pgd_at', 'standard'), ('jpeg', '')):
    res = _results(0.9, 0.6, 0.5, 0.4)
    res['suite'] = {'name': suite, 'accuracy': 0.4} if suite else None
    _write(tmp_path, name, res)
  text = layouts.render(ZOO, ['pgd_at', 'jpeg'], BASE, code=provenance.CodeCheck(str(tmp_path)))
  rows = {line.split('|')[1].strip(): line for line in text.splitlines() if line.startswith('| ')}
  assert '40.0 †' in rows['jpeg'] and '†' not in rows['pgd_at']
  assert 'Upper bound' in text and 'jpeg' in text.split('Upper bound')[1]


# The rows of robust_jax/zoo.py before the zoo became configs/zoo.py: config file, the flags of
# its command line (eval.num_examples=1000 on every row) and its train.epochs per pass over the
# data. configs/zoo.py must give each row the same config, so finished rows stay comparable.
_MEMBER = ('--config.eval.suite=', '--config.eval.sanity_checks=false')
OLD_ROWS = {
    'standard': ('standard', ()), 'pgd_at': ('pgd_at', ()), 'fgsm_rs': ('fgsm_rs', ()),
    'free_at': ('free_at', (), 8), 'trades': ('trades', ()), 'mart': ('mart', ()),
    'awp': ('awp', ()),
    'distillation_teacher': ('distillation_teacher', _MEMBER),
    'distillation': ('distillation',
                     ('--config.defense.teacher=workdirs/zoo/distillation_teacher',)),
    **{f'ensemble_member_{s}': ('standard', (f'--config.seed={s}', *_MEMBER)) for s in (1, 2, 3)},
    'ensemble': ('ensemble', ('--config.defense.members=workdirs/zoo/ensemble_member_1,'
                              'workdirs/zoo/ensemble_member_2,workdirs/zoo/ensemble_member_3',)),
    'ensemble_at': ('ensemble_at', ('--config.defense.static_models=workdirs/zoo/'
                                    'ensemble_member_1,workdirs/zoo/ensemble_member_2',)),
    'random_resize': ('random_resize', ()), 'gaussian_noise': ('gaussian_noise', ()),
    'bit_depth': ('bit_depth', ()), 'thermometer': ('thermometer', ()), 'median': ('median', ()),
    'jpeg': ('jpeg', ()), 'feature_squeezing': ('feature_squeezing', ()),
}


def _parse(args, monkeypatch):
  """The config launch.py builds from the --config flags of `args` (run from the repo root)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(runner.ROOT)
  argv = ['launch.py'] + [a for a in args if a.startswith('--config')]
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads the overrides from sys.argv
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=fv, lock_config=True)
  fv(argv)
  return fv.config


@pytest.mark.parametrize('cut', [{}, {'eval.num_examples': 500, 'paper.passes': 1},
                                 {'eval.num_examples': 0, 'paper.passes': 2}])
def test_rows_are_the_defense_configs_with_the_old_zoo_flags(cut, monkeypatch):
  import importlib  # pylint: disable=g-import-not-at-top
  assert list(ZOO.ROWS) == list(OLD_ROWS)
  examples, passes = cut.get('eval.num_examples', 1000), cut.get('paper.passes', 0)
  for name, (defense, flags, *per_pass) in OLD_ROWS.items():
    old = _parse([f'--config=configs/defenses/{defense}.py', *flags,
                  f'--config.eval.num_examples={examples}'] +
                 ([f'--config.train.epochs={passes * (per_pass or [1])[0]}'] if passes else []),
                 monkeypatch).to_dict()
    new = runner.row_config(ZOO, name, cut, BASE).to_dict()
    del new['paper']
    assert new == old, (name, [k for k in new if new[k] != old.get(k)])
  assert importlib.import_module('configs.zoo').EXAMPLES == 1000


def test_the_table_rows_are_the_defenses_and_prerequisites_run_first(tmp_path, monkeypatch):
  files = sorted(f[:-3] for f in os.listdir(os.path.join(runner.ROOT, 'configs', 'defenses'))
                 if f.endswith('.py') and f != '__init__.py')
  shown = [r for r in ZOO.ROWS if not ZOO.get_config(r).paper.prerequisite]
  assert len(shown) == 17 and sorted(shown) == [f for f in files if f != 'distillation_teacher']
  prerequisites = [r for r in ZOO.ROWS if r not in shown]
  assert prerequisites == ['distillation_teacher', 'ensemble_member_1', 'ensemble_member_2',
                           'ensemble_member_3']
  assert runner.with_needs(ZOO, ['ensemble_at', 'distillation', 'ensemble']) == [
      'ensemble_member_1', 'ensemble_member_2', 'ensemble_at', 'distillation_teacher',
      'distillation', 'ensemble_member_3', 'ensemble']
  # Every row is a CPU row: the default selection runs them all, prerequisites included.
  assert runner.select_rows(ZOO, 'cpu') == list(ZOO.ROWS)
  # The table leaves the prerequisites out even where they have results.
  monkeypatch.chdir(tmp_path)
  for name in ('distillation_teacher', 'distillation'):
    _write(tmp_path, name, _results(0.9, 0.5, 0.4, 0.4))
  text = layouts.render(ZOO, list(ZOO.ROWS), BASE, code=provenance.CodeCheck(str(tmp_path)))
  assert not any(x.startswith('| distillation_teacher') for x in text.splitlines())
  assert 'Not run yet: standard, ' in text and 'ensemble_member' not in text.split('Not run')[1]
  # The row's command runs the teacher first, in the workdir the student reads it from.
  line = next(x for x in text.splitlines() if x.startswith('- distillation: `'))
  first, then = line.split(' then ')
  assert '--config=configs/zoo.py:distillation_teacher' in first
  assert ('--workdir=workdirs/zoo/distillation ' in then
          and '--config.defense.teacher=workdirs/zoo/distillation_teacher' in then)


def test_each_rows_command_line_gives_the_rows_config(monkeypatch):
  # Under another base and with the cuts as overrides, as run_table runs the rows.
  cut = {'eval.num_examples': 500, 'paper.passes': 1, 'eval.sanity_examples': 100}
  for name in ZOO.ROWS:
    config = runner.row_config(ZOO, name, cut, 'elsewhere')
    command = runner.row_command(CONFIG, config, f'elsewhere/{name}', cut)
    assert command[:5] == ['python', 'launch.py', f'--config=configs/zoo.py:{name}',
                           f'--workdir=elsewhere/{name}', '--progress=false']
    assert _parse(command, monkeypatch).to_dict() == config.to_dict(), name
  free_at = runner.row_config(ZOO, 'free_at', cut, 'elsewhere')
  assert free_at.train.epochs == 8 and runner.row_config(ZOO, 'fgsm_rs', cut, '.').train.epochs == 1
  assert runner.row_config(ZOO, 'ensemble', cut, 'elsewhere').defense.members == (
      'elsewhere/ensemble_member_1,elsewhere/ensemble_member_2,elsewhere/ensemble_member_3')


def test_the_old_zoo_commands_action_prints_each_rows_command(capsys):
  assert zoo.main(['commands', '--only=ensemble_at', '--epochs=1', '--',
                   '--config.eval.sanity_examples=100']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert [x.split()[2] for x in lines] == [
      '--config=configs/zoo.py:ensemble_member_1', '--config=configs/zoo.py:ensemble_member_2',
      '--config=configs/zoo.py:ensemble_at']
  assert all('--config.paper.passes=1' in x and x.endswith('--config.eval.sanity_examples=100')
             for x in lines)
  assert ('--config.defense.static_models=workdirs/zoo/ensemble_member_1,'
          'workdirs/zoo/ensemble_member_2') in lines[-1]


def test_launch_table_mode_renders_the_zoo_without_running(tmp_path):
  _write(tmp_path, 'pgd_at', _results(0.8, 0.6, 0.55, 0.5))
  out = subprocess.run(
      [sys.executable, 'launch.py', '--mode=table', f'--config={CONFIG}',
       f'--workdir={tmp_path / BASE}', '--table_run=false', '--config.paper.passes=1',
       '--config.eval.num_examples=500'], cwd=runner.ROOT, env=conftest.SUBPROCESS_ENV,
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert layouts.ZOO_HEADER in out.stdout
  assert '| pgd_at | 80.0 | 60.0 | 55.0 | pgd40_linf_0.1_ce_bpda | 50.0 | 3/3 PASS | 12 |' \
      in out.stdout
  assert (f'--workdir={tmp_path / BASE}/pgd_at --progress=false --config.paper.passes=1 '
          '--config.eval.num_examples=500`') in out.stdout
  assert 'Not run yet: standard, fgsm_rs,' in out.stdout
  with open(tmp_path / BASE / 'table.md') as f:
    assert '| pgd_at | 80.0 |' in f.read()


def test_rows_run_in_parallel_after_what_they_need_and_the_ensemble_is_checked_then(
    tmp_path, monkeypatch):
  """--table_jobs=2: the members first (two at a time), then the ensemble, whose config is
  checked only once its members' workdirs exist (validation reads their config.json)."""
  monkeypatch.chdir(tmp_path)
  events = []

  def fake_call(args, cwd, stdout, stderr):
    workdir = next(a for a in args if a.startswith('--workdir='))[len('--workdir='):]
    events.append(os.path.basename(workdir))
    os.makedirs(workdir, exist_ok=True)
    for name, content in (('config.json', {'data': {'name': 'fashion_mnist'}}),
                          ('results.json', _results(0.9, 0.5, 0.4, 0.4))):
      with open(os.path.join(workdir, name), 'w') as f:
        json.dump(content, f)
    return 0
  monkeypatch.setattr(runner.subprocess, 'call', fake_call)
  checked = []

  def validate(c):
    checked.append(c.paper.row)
    validation.validate(c, 1)
  text, skipped = tables.run_table(CONFIG_PATH, 'ensemble', BASE, {}, run=True,
                                   validate=validate, run_fn=None, jobs=2)
  assert skipped == {} and events[-1] == 'ensemble'
  assert sorted(events[:3]) == list(ZOO.MEMBERS)
  assert checked[:3] == list(ZOO.MEMBERS) and checked[3] == 'ensemble'
  assert '| ensemble | 90.0 |' in text
