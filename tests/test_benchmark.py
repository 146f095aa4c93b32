"""The benchmark harness runs and reports every figure; no timing thresholds anywhere.

Tiny settings (small_cnn, batch 8, 2 attack steps, 1 repeat). The side-by-side smoke run needs
torch and torchattacks (.venv-ref, see requirements-ref.txt) and is skipped without them:

  .venv-ref/bin/python -m pytest tests/test_benchmark.py
"""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from configs import default
from robust_jax import benchmark
from robust_jax import costs
from robust_jax import errors
from robust_jax import parallel
from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTACK_KEYS = {'model', 'batch_size', 'attack', 'steps', 'devices', 'platform', 'img_steps_per_s',
               'compile_s', 'median_s', 'times_s', 'repeats', 'forward_macs_per_img',
               'flops_per_img_step_hand', 'flops_per_img_step_xla', 'xla_flops_raw',
               'xla_loop_body_counted_once', 'gflops_per_s', 'pct_of_ceiling', 'peak_memory',
               'ceiling_gflops', 'train_step'}
TRAIN_KEYS = {'defense', 'train_attack', 'attack_steps', 'img_per_s', 'compile_s', 'median_s',
              'times_s', 'flops_per_img_hand', 'flops_per_img_xla', 'gflops_per_s',
              'pct_of_ceiling', 'peak_memory'}


def _tiny(**overrides):
  c = default.get_config()
  c.benchmark.batch_size, c.benchmark.attack.steps = 8, 2
  c.benchmark.repeats, c.benchmark.warmup, c.benchmark.matmul_size = 1, 1, 128
  c.train_attack.steps = 2
  for k, v in overrides.items():
    c.benchmark[k] = v
  return c


def test_harness_json_has_every_figure(tmp_path, capsys):
  # 64 rows per device: below that small_cnn's dense forward pass runs padded to 64 rows
  # (models.fast_ops.dot_general), work that XLA counts and the hand count does not.
  out = benchmark.main(_tiny(batch_size=64 * len(jax.devices())), str(tmp_path),
                       parallel.make_mesh())
  assert ATTACK_KEYS <= set(out) and TRAIN_KEYS <= set(out['train_step'])
  assert out['steps'] == 2 and out['devices'] == len(jax.devices()) and len(out['times_s']) == 1
  for r in (out, out['train_step']):
    assert r['compile_s'] > 0 and r['median_s'] > 0 and r['gflops_per_s'] > 0
    assert r['peak_memory']['bytes'] > 0 and r['peak_memory']['source']
  # XLA's count and the hand count describe the same step (padding taps make XLA's a bit lower).
  assert 0.5 < out['flops_per_img_step_xla'] / out['flops_per_img_step_hand'] < 1.5
  assert 0.5 < out['train_step']['flops_per_img_xla'] / out['train_step']['flops_per_img_hand'] \
      < 1.5
  printed = capsys.readouterr().out.strip().splitlines()
  assert printed[0].startswith('| model | batch |') and json.loads(printed[-1]) == json.loads(
      (tmp_path / 'benchmark.json').read_text())


def test_sweep_runs_every_model_and_batch(tmp_path, capsys):
  c = _tiny(models='small_cnn', batch_sizes='8,16', train_step=False, model_steps='small_cnn:1')
  out = benchmark.main(c, str(tmp_path), parallel.make_mesh())
  printed = capsys.readouterr().out
  assert printed.count('| model | batch |') == 1 and printed.count('| small_cnn |') == 2
  got = [(r['model'], r['batch_size'], r['steps'], r['steps_overridden']) for r in out['results']]
  assert got == [('small_cnn', 8, 1, True), ('small_cnn', 16, 1, True)]
  assert out['ceiling']['gflops'] > 0 and 'train_step' not in out['results'][0]


@pytest.mark.parametrize('field,value,message', [
    ('models', 'small_cnn,resnet50', "unknown model 'resnet50'"),
    ('batch_sizes', '256,x', 'comma-separated integers'),
    ('batch_sizes', '6', 'not divisible by the 4 devices'),
    ('model_steps', 'wide_resnet', 'MODEL:STEPS'),
    ('time_budget_s', -1, 'time_budget_s=-1'),
])
def test_bad_benchmark_fields_name_the_field(field, value, message):
  with pytest.raises(errors.ConfigError, match=message):
    benchmark.validate(_tiny(**{field: value}), num_devices=4)


def test_forward_macs_matches_the_layer_by_layer_count():
  c = default.get_config()
  model, shape = benchmark.build_model(c, 'small_cnn')
  from robust_jax import model_fns  # pylint: disable=g-import-not-at-top
  v = model_fns.init_variables(model, jax.random.key(0), shape)
  # conv 4x4 1->16 to 14x14, conv 4x4 16->32 to 7x7, dense 1568->100, dense 100->10.
  expected = 14 * 14 * 16 * 16 + 7 * 7 * 32 * 16 * 16 + 7 * 7 * 32 * 100 + 100 * 10
  assert costs.forward_macs(model, v, shape) == expected


def test_loop_normalisation():
  once = costs.loop_body_counted_once()
  assert isinstance(once, bool)
  assert costs.normalised_flops(100.0, 5, 20.0) == (180.0 if once else 100.0)
  assert costs.normalised_flops(100.0, 1, 20.0) == 100.0


def test_launch_benchmark_mode_writes_benchmark_json(tmp_path):
  r = subprocess.run(
      [sys.executable, 'launch.py', '--mode=benchmark', f'--workdir={tmp_path}',
       '--config.benchmark.batch_size=8', '--config.benchmark.attack.steps=2',
       '--config.benchmark.repeats=1', '--config.train_attack.steps=2',
       '--config.benchmark.matmul_size=128'],
      cwd=ROOT, env=dict(conftest.SUBPROCESS_ENV, XLA_FLAGS=conftest.FAKE_DEVICES),
      capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.loads((tmp_path / 'benchmark.json').read_text())
  assert json.loads(r.stdout.strip().splitlines()[-1]) == saved
  assert ATTACK_KEYS <= set(saved) and saved['devices'] == 4
  assert '| small_cnn | 8 | 2 |' in r.stdout


needs_torch = pytest.mark.skipif(
    not (importlib.util.find_spec('torch') and importlib.util.find_spec('torchattacks')),
    reason='torch/torchattacks not installed (they live in .venv-ref)')


@needs_torch
def test_side_by_side_tiny(tmp_path):
  path = tmp_path / 'sbs.json'
  r = subprocess.run([sys.executable, 'benchmarks/side_by_side.py', '--tiny', '--torch_threads=1',
                      f'--json={path}'],
                     cwd=ROOT, env=dict(conftest.SUBPROCESS_ENV, XLA_FLAGS=''),
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(path.read_text())
  rows = {row['impl']: row for row in out['attacks'][0]['rows']}
  assert {'robust_jax', 'torchattacks', 'torch_plain', 'torch_cl'} <= set(rows)
  for row in rows.values():
    assert row['img_steps_per_s'] > 0 and row['max_linf'] <= 0.1 + 1e-6
  assert out['attacks'][0]['logit_gap'] < 1e-4
  assert set(out['pgd_at']['rows']) == {'robust_jax', 'torch_plain'}
  assert 'robust_jax / this' in r.stdout and 'EXTRAPOLATED' in r.stdout


@pytest.mark.slow
def test_data_parallel_result_does_not_depend_on_device_count(tmp_path):
  path = tmp_path / 'dp.json'
  r = subprocess.run([sys.executable, 'benchmarks/data_parallel.py', '--devices=1,2',
                      '--model=small_cnn', '--batch=8', '--steps=2', '--train_attack_steps=2',
                      '--repeats=1', '--matmul_size=128', '--platform=cpu', f'--json={path}'],
                     cwd=ROOT, capture_output=True, text=True, timeout=600,
                     # Backend optimisation off (the children keep it): this checks agreement.
                     env=dict(conftest.SUBPROCESS_ENV, XLA_FLAGS=conftest.FAST_COMPILE))
  assert r.returncode == 0, r.stderr[-3000:]
  rows = json.loads(path.read_text())
  assert [row['devices'] for row in rows] == [1, 2]
  assert all(row['x_adv_gap'] < 1e-5 for row in rows)
