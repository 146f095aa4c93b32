"""scripts/same_results.py: what counts as the same results."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    'same_results', os.path.join(os.path.dirname(__file__), '..', 'scripts', 'same_results.py'))
same_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(same_results)


def _results(**kw):
  r = {'clean_accuracy': 0.8, 'worst_case_accuracy': 0.5, 'eval_seconds': 12.0,
       'code_version': 'a', 'finished_at': 't1', 'machine': 'x',
       'attacks': {'pgd20': {'accuracy': 0.6, 'correct': 60, 'seconds': 3.0}},
       'sanity_checks': [{'name': 'c', 'value': float('nan'), 'verdict': 'PASS'}]}
  r.update(kw)
  return r


def test_runs_differing_only_in_times_versions_and_machine_are_the_same():
  b = _results(eval_seconds=99.0, code_version='b', finished_at='t2', machine='y')
  b['attacks']['pgd20']['seconds'] = 7.0
  assert same_results.differences(_results(), b) == []


def test_a_changed_figure_anywhere_is_reported_with_its_path():
  b = _results()
  b['attacks']['pgd20']['correct'] = 59
  assert same_results.differences(_results(), b) == ['/attacks/pgd20/correct: 60 against 59']
  c = _results(sanity_checks=[{'name': 'c', 'value': 0.1, 'verdict': 'PASS'}])
  assert same_results.differences(_results(), c) == ['/sanity_checks[0]/value: nan against 0.1']
  assert same_results.differences(_results(), _results(sanity_checks=[])) == [
      '/sanity_checks: 1 items against 0']
  d = _results()
  del d['worst_case_accuracy']
  assert same_results.differences(_results(), d) == ['/worst_case_accuracy: only in base']
