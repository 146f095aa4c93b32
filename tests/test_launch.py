"""End to end through launch.py, in subprocesses, on the real offline Fashion-MNIST."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ['--config.train.steps=6', '--config.train.batch_size=32', '--config.eval.num_examples=64',
         '--config.eval.batch_size=32', '--config.checkpoint.every_steps=3',
         '--config.train.log_every_steps=2', '--config.train_attack.steps=2',
         '--config.eval.attacks.pgd20.steps=3', '--config.eval.attacks.pgd40x2.steps=3',
         '--config.eval.sanity_checks=false', '--progress=false']  # sanity: tests/test_sanity.py

needs_fashion_mnist = pytest.mark.skipif(
    not os.path.exists('/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz'),
    reason='Debian package dataset-fashion-mnist not installed (make test installs it)')


def launch(*args, data_dir, timeout=600, devices=1, fast_compile=True, drop_env=()):
  """launch.py in a subprocess. `fast_compile`: XLA's backend optimisation off, as in-process
  tests compile (conftest.FAST_COMPILE); runs that train for real pass False. `drop_env`:
  variables of the test environment the child runs without."""
  env = conftest.subprocess_env(devices, fast_compile, TFDS_DATA_DIR=str(data_dir))
  env = {k: v for k, v in env.items() if k not in drop_env}
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@needs_fashion_mnist
def test_train_eval_resume_and_eval_mode(tmp_path, tfds_dir):
  wd = tmp_path / 'wd'
  r = launch(f'--workdir={wd}', *QUICK, data_dir=tfds_dir, devices=2)
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.loads((wd / 'results.json').read_text())
  for key in ('clean_accuracy', 'attacks', 'worst_case_accuracy', 'num_examples', 'config',
              'code_version'):
    assert key in results
  assert results['num_examples'] == 64 and results['train_steps'] == 6
  assert set(results['attacks']) == {'fgsm', 'pgd20', 'pgd40x2'}
  assert results['attacks']['pgd20']['metric'] == 'pgd3_linf_0.1_ce'
  assert '| worst case |' in r.stdout
  assert any(p.startswith('events') for p in os.listdir(wd / 'tensorboard'))

  # The same command with more steps resumes from step 6 and logs each step once.
  more = [a if not a.startswith('--config.train.steps') else '--config.train.steps=9'
          for a in QUICK]
  r = launch(f'--workdir={wd}', *more, data_dir=tfds_dir, devices=2)
  assert r.returncode == 0, r.stderr[-3000:]
  steps = [json.loads(line)['step'] for line in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert steps == list(range(1, 10))

  r = launch('--mode=eval', f'--workdir={tmp_path / "ev"}', f'--checkpoint={wd}', *QUICK,
             data_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads((tmp_path / 'ev' / 'results.json').read_text())['train_steps'] == 9


def test_benchmark_mode_prints_json(tmp_path):
  # Without the test session's JAX_COMPILATION_CACHE_DIR, --compile_cache picks the directory
  # and the JSON records it (the benchmark's default, 'auto', is no cache).
  r = launch('--mode=benchmark', '--config.benchmark.batch_size=16',
             '--config.benchmark.attack.steps=3', '--config.benchmark.repeats=2',
             f'--compile_cache={tmp_path / "xla"}', data_dir=tmp_path,
             drop_env=('JAX_COMPILATION_CACHE_DIR',))
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out['img_steps_per_s'] > 0 and out['compile_s'] > 0 and out['steps'] == 3
  assert out['environment']['compile_cache'] == str(tmp_path / 'xla')


@pytest.mark.parametrize('flag,message', [
    ('--config.model.name=resnet50', "model.name='resnet50'; valid:"),
    ('--config.train_attack.eps=-0.5', 'train_attack.eps=-0.5 must be'),
    ('--config.data.name=imagenet', "data.name='imagenet'; valid:"),
])
def test_bad_config_fails_fast_with_one_clear_line(tmp_path, flag, message):
  r = launch(flag, f'--workdir={tmp_path}', data_dir=tmp_path, timeout=120)
  assert r.returncode == 2
  assert message in r.stderr and 'Traceback' not in r.stderr


def test_offline_catalogue_dataset_fails_within_seconds(tmp_path):
  t0 = time.time()
  r = launch('--config.data.name=cifar100', f'--workdir={tmp_path}', data_dir=tmp_path,
             timeout=120)
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'fashion_mnist' in r.stderr and 'Traceback' not in r.stderr
  assert time.time() - t0 < 60
