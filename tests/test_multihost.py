"""Multi-host: 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo collectives) train
to the same parameters as 1 process x 4 devices; flag validation; a dead peer ends the others."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from robust_jax import distributed
from robust_jax import errors
from tests import conftest
from tests.test_launch import needs_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = [
    '--config.defense.name=standard', '--config.optim.name=sgd',
    '--config.optim.learning_rate=0.05', '--config.optim.schedule=constant',
    '--config.train.steps=4', '--config.train.batch_size=16', '--config.train.log_every_steps=1',
    '--config.checkpoint.every_steps=2', '--config.eval.num_examples=32',
    '--config.eval.batch_size=16', '--config.eval.sanity_checks=false',
    '--config.eval.attacks.pgd20.steps=2', '--config.eval.attacks.pgd40x2.steps=2',
    '--progress=false']


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(args, devices, data_dir):
  # Backend optimisation off (conftest.FAST_COMPILE): these runs check agreement, not speed.
  env = conftest.subprocess_env(devices, TFDS_DATA_DIR=str(data_dir))
  return subprocess.Popen([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _params(workdir, step=None):
  """(step, parameter arrays) of the latest checkpoint of `workdir`, or of checkpoint `step`."""
  from robust_jax import experiment  # pylint: disable=g-import-not-at-top
  path = None if step is None else str(workdir / 'checkpoints' / str(step))
  _, params, _, _, step = experiment.load_model(str(workdir), path)
  import jax  # pylint: disable=g-import-not-at-top
  return step, [np.asarray(a) for a in jax.tree.leaves(params)]


def test_settings_from_flags_environment_and_errors(monkeypatch):
  for var in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'SLURM_NTASKS',
              'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(var, raising=False)
  assert distributed.settings('auto') is None
  assert distributed.settings('off', 'h:1', 2, 0) is None
  assert distributed.settings('auto', 'h:1', 2, 1) == dict(
      coordinator_address='h:1', num_processes=2, process_id=1)
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'c:9')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  assert distributed.settings('auto')['process_id'] == 3
  with pytest.raises(errors.ConfigError, match='process_id=5'):
    distributed.settings('auto', process_id=5)
  monkeypatch.delenv('JAX_PROCESS_ID')
  with pytest.raises(errors.ConfigError, match='all three'):
    distributed.settings('auto')
  monkeypatch.setenv('JAX_PROCESS_ID', 'x')
  with pytest.raises(errors.ConfigError, match='JAX_PROCESS_ID'):
    distributed.settings('auto')
  for var in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(var)
  monkeypatch.setenv('SLURM_NTASKS', '8')
  assert distributed.settings('auto') == {}  # JAX's own SLURM detection
  with pytest.raises(errors.ConfigError, match='--distributed'):
    distributed.settings('maybe')


@pytest.mark.slow
@needs_fashion_mnist
def test_two_processes_match_one_process_with_four_devices(tmp_path, tfds_dir):
  # One process x 4 devices trains 6 steps once; its checkpoints 4 and 6 are the references for
  # the two-process run to step 4 and for its resumption to step 6 (constant learning rate: a
  # 6-step run's first 4 steps are a 4-step run's).
  more = ['--config.train.steps=6']
  one = _start([f'--workdir={tmp_path / "one"}', *QUICK, *more], 4, tfds_dir)
  out, _ = one.communicate(timeout=600)
  assert one.returncode == 0, out[-3000:]
  port = _free_port()
  procs = [_start([f'--workdir={tmp_path / "two"}', *QUICK,
                   f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                   f'--process_id={i}'], 2, tfds_dir) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  step1, p1 = _params(tmp_path / 'one', 4)
  step2, p2 = _params(tmp_path / 'two')
  assert step1 == step2 == 4
  for a, b in zip(p1, p2):
    np.testing.assert_allclose(a, b, atol=1e-5)
  r2 = json.loads((tmp_path / 'two' / 'results.json').read_text())
  assert len(r2['devices']) == 4 and r2['train_steps'] == 4
  lines = (tmp_path / 'two' / 'metrics.jsonl').read_text().splitlines()
  steps = [json.loads(x)['step'] for x in lines]
  assert steps == [1, 2, 3, 4]
  # Each host read from disk only its 8 rows of each of the 4 global batches of 16.
  assert 'Training records read by host' not in out  # one process: the split in memory
  for i, o in enumerate(outs):
    assert f'Training records read by host {i}: 32 (of 60000 on disk)' in o, o[-3000:]

  # A damaged latest checkpoint: both hosts set it aside together (process 0 renames it, the
  # other waits at a barrier), resume from step 2 and reach the parameters of 1 process.
  for f in (tmp_path / 'two' / 'checkpoints' / '4').rglob('*'):
    if f.is_file() and f.parent.name == 'd':
      f.write_bytes(b'garbage')
  port = _free_port()
  procs = [_start([f'--workdir={tmp_path / "two"}', *QUICK, *more,
                   f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
                   f'--process_id={i}'], 2, tfds_dir) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
    assert 'corrupt-4' in o and 'Resuming from' in o
  assert (tmp_path / 'two' / 'checkpoints' / 'corrupt-4').is_dir()
  (step1, p1), (step2, p2) = _params(tmp_path / 'one'), _params(tmp_path / 'two')
  assert step1 == step2 == 6
  for a, b in zip(p1, p2):
    np.testing.assert_allclose(a, b, atol=1e-5)
  r1 = json.loads((tmp_path / 'one' / 'results.json').read_text())
  r2 = json.loads((tmp_path / 'two' / 'results.json').read_text())
  assert r1['clean_accuracy'] == r2['clean_accuracy']
  assert len(r2['devices']) == 4 and r1['train_steps'] == r2['train_steps'] == 6


@pytest.mark.slow
@needs_fashion_mnist
def test_a_dead_peer_ends_the_survivor_with_an_error(tmp_path, tfds_dir):
  port = _free_port()
  args = [f'--workdir={tmp_path / "wd"}', *QUICK, '--config.train.steps=100000',
          f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
          '--heartbeat_timeout_s=10']
  procs = [_start(args + [f'--process_id={i}'], 2, tfds_dir) for i in range(2)]
  metrics = tmp_path / 'wd' / 'metrics.jsonl'
  deadline = time.time() + 300
  while not (metrics.exists() and metrics.read_text().count('\n') >= 1):  # collectives run
    assert time.time() < deadline and procs[0].poll() is None, procs[0].communicate()[0][-3000:]
    time.sleep(1)
  procs[1].kill()
  t0 = time.time()
  out, _ = procs[0].communicate(timeout=240)
  assert procs[0].returncode != 0
  assert time.time() - t0 < 240
