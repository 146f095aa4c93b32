"""Figures over seeds: mean, sample std and range from results dicts; bad input is an error."""

import json

import numpy as np
import pytest

from robust_jax import seeds


def _results(clean, pgd, worst, n=100):
  return {'num_examples': n, 'clean_accuracy': clean, 'worst_case_accuracy': worst,
          'attacks': {'pgd20': {'accuracy': pgd, 'metric': 'pgd20_linf_0.1_ce'}},
          'code_version': 'abc'}


def test_mean_and_sample_std_per_figure():
  agg = seeds.aggregate([(0, _results(0.8, 0.6, 0.5)), (1, _results(0.9, 0.7, 0.6)),
                         (2, _results(0.7, 0.5, 0.4))])
  f = agg['figures']
  assert list(f) == ['clean', 'pgd20 (pgd20_linf_0.1_ce)', 'worst case']
  assert f['clean']['mean'] == pytest.approx(0.8)
  assert f['clean']['std'] == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
  assert (f['worst case']['min'], f['worst case']['max']) == (0.4, 0.6)
  assert f['pgd20 (pgd20_linf_0.1_ce)']['per_seed'] == [0.6, 0.7, 0.5]
  text = seeds.table(agg)
  assert '| clean | 80.00 | 10.00 | 80.00 | 90.00 | 70.00 |' in text
  assert 'Over 3 seeds' in text


def test_runs_that_do_not_compare_are_refused():
  with pytest.raises(ValueError, match='numbers of examples'):
    seeds.aggregate([(0, _results(0.8, 0.6, 0.5)), (1, _results(0.8, 0.6, 0.5, n=50))])
  other = _results(0.8, 0.6, 0.5)
  other['attacks'] = {}
  with pytest.raises(ValueError, match='seed 1 reports'):
    seeds.aggregate([(0, _results(0.8, 0.6, 0.5)), (1, other)])
  with pytest.raises(ValueError, match='comma-separated'):
    seeds.parse('0,one')
  with pytest.raises(ValueError, match='distinct'):
    seeds.parse('1,1')


def test_write_reads_each_seed_workdir(tmp_path):
  for s, clean in ((3, 0.5), (4, 0.7)):
    d = tmp_path / f'seed_{s}'
    d.mkdir()
    (d / 'results.json').write_text(json.dumps({**_results(clean, 0.4, 0.3),
                                                'machine': f'cpu {s}'}))
  agg, text = seeds.write(str(tmp_path), [3, 4])
  assert agg['machines'] == ['cpu 3', 'cpu 4']
  assert agg['figures']['clean']['mean'] == pytest.approx(0.6)
  assert json.loads((tmp_path / 'seeds.json').read_text())['seeds'] == [3, 4]
  assert (tmp_path / 'seeds.md').read_text().strip() == text


def test_machine_names_the_cpu_and_its_vector_instruction_set(tmp_path):
  from robust_jax import version
  info = tmp_path / 'cpuinfo'
  info.write_text('processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma\n\n'
                  'processor\t: 1\nmodel name\t: other\nflags\t\t: avx512f\n')
  text = version.machine(str(info))
  assert text.startswith('AMD EPYC 7B13, avx2, ') and text.endswith(' cores')
  info.write_text('model name\t: Intel Xeon\nflags\t\t: avx2 avx512f\n')
  assert version.machine.__wrapped__(str(info)).startswith('Intel Xeon, avx512f')
  assert 'cores' in version.machine.__wrapped__(str(tmp_path / 'missing'))
