"""A training run killed with SIGKILL mid-training and mid-evaluation and restarted with the same
command ends bitwise equal to an uninterrupted run, with every step logged exactly once and the
evaluation's finished phases read back, not recomputed; with additional data mixed into every
batch too (its stream resumes from the checkpointed step)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import conftest
from tests.test_launch import needs_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8
ARGS = [f'--config.train.steps={STEPS}', '--config.train.batch_size=32',
        '--config.train.log_every_steps=1', '--config.checkpoint.every_steps=3',
        '--config.train_attack.steps=2', '--config.eval.num_examples=32',
        '--config.eval.batch_size=16', '--config.eval.sanity_checks=false',
        '--config.eval.attacks.pgd20.steps=2', '--config.eval.attacks.pgd40x2.steps=2',
        '--progress=false']


def _start(workdir, data_dir, more=()):
  # Backend optimisation off (conftest.FAST_COMPILE): these runs check exactness, not speed.
  env = conftest.subprocess_env(2, TFDS_DATA_DIR=str(data_dir))
  return subprocess.Popen([sys.executable, 'launch.py', f'--workdir={workdir}', *ARGS, *more],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _logged_steps(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)['step'] for line in f if line.strip()]


def _clean_phase_done(workdir):
  """Whether the evaluation has saved its whole clean phase (2 batches of 16) to eval_progress."""
  try:
    with np.load(os.path.join(workdir, 'eval_progress', 'clean.npz')) as f:
      return bool(f['done'].all())
  except (OSError, ValueError, KeyError):
    return False


def _leaves(workdir):
  from robust_jax import experiment  # pylint: disable=g-import-not-at-top
  _, params, _, _, step = experiment.load_model(str(workdir))
  return step, [np.asarray(a) for a in jax.tree.leaves(params)]


@pytest.mark.slow
@needs_fashion_mnist
@pytest.mark.parametrize('more', [(), ('--config.data.extra.synthetic=300',)],
                         ids=['real', 'extra_data'])
def test_sigkill_at_several_moments_then_resume_is_exact(tmp_path, tfds_dir, more):
  data_dir = tfds_dir
  ref = _start(tmp_path / 'ref', data_dir, more)
  out, _ = ref.communicate(timeout=600)
  assert ref.returncode == 0, out[-3000:]

  wd = tmp_path / 'killed'
  kills = []
  # Mid-training: 5 logged steps, past the checkpoint of step 3 (the restart resumes there and
  # logs steps 4 and 5 again, once). Mid-evaluation: all steps trained and the clean phase saved,
  # the attacks still running (the restart trains nothing and reads the clean phase back).
  for ready in (lambda: len(_logged_steps(wd)) >= 5, lambda: _clean_phase_done(wd)):
    proc = _start(wd, data_dir, more)
    deadline = time.time() + 300
    while not ready() and proc.poll() is None:
      assert time.time() < deadline
      time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(len(_logged_steps(wd)))
  assert not (wd / 'results.json').exists()  # the last kill came before the evaluation ended
  clean_file = wd / 'eval_progress' / 'clean.npz'
  clean_saved = clean_file.stat().st_mtime_ns
  final = _start(wd, data_dir, more)
  out, _ = final.communicate(timeout=600)
  assert final.returncode == 0, out[-3000:]

  assert 3 < kills[0] < STEPS and kills[1] == STEPS, kills
  assert clean_file.stat().st_mtime_ns == clean_saved  # read back, not recomputed
  assert _logged_steps(wd) == list(range(1, STEPS + 1))
  (s_ref, p_ref), (s_wd, p_wd) = _leaves(tmp_path / 'ref'), _leaves(wd)
  assert s_ref == s_wd == STEPS
  for a, b in zip(p_ref, p_wd):
    np.testing.assert_array_equal(a, b)
  print(f'\nkill-and-resume: SIGKILL after {kills} logged steps (the last mid-evaluation); '
        f'resumed to step {s_wd}; '
        f'{len(p_ref)} parameter arrays bitwise equal to the uninterrupted run; metrics.jsonl '
        f'steps 1..{STEPS} once each')
  r_ref = json.loads((tmp_path / 'ref' / 'results.json').read_text())
  r_wd = json.loads((wd / 'results.json').read_text())
  assert r_ref['clean_accuracy'] == r_wd['clean_accuracy']
  assert r_ref['worst_case_accuracy'] == r_wd['worst_case_accuracy']
  print(f'kill-and-resume: clean {r_wd["clean_accuracy"]:.4f} and worst case '
        f'{r_wd["worst_case_accuracy"]:.4f} in both runs')
