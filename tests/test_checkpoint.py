"""Checkpoints: round trip, loading from a workdir or a step folder, clear errors."""

import shutil
import subprocess

import jax
import numpy as np
import pytest

from robust_jax import checkpoint
from robust_jax import errors
from robust_jax import models
from robust_jax import optim
from robust_jax import train
from tests import helpers


def _state(seed):
  config = helpers.quick_config()
  model = models.build(config.model, num_classes=10, mean=(0.5,), std=(0.25,))
  tx, _ = optim.make_optimizer(config.optim, 10, 10)
  return train.init_state(model, tx, jax.random.key(seed), (28, 28, 1))


def test_round_trip_and_load_paths(tmp_path):
  state = _state(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1)
  ckpt.save(3, state)
  ckpt.save(5, state.replace(step=state.step + 5))
  ckpt.close()
  template = _state(1)
  restored, resumed = checkpoint.Checkpointer(str(tmp_path), 1).restore_or_init(template)
  assert resumed and int(restored.step) == 5
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(restored.params)):
    np.testing.assert_array_equal(a, b)
  _, step = checkpoint.load(str(tmp_path), template)
  assert step == 5
  _, step = checkpoint.load(str(tmp_path / 'checkpoints' / '3'), template)
  assert step == 3


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    checkpoint.load(str(tmp_path / 'nothing_here'), _state(0))
  (tmp_path / 'empty' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='No finished checkpoint'):
    checkpoint.load(str(tmp_path / 'empty'), _state(0))


def test_fresh_workdir_starts_from_scratch(tmp_path):
  state = _state(0)
  restored, resumed = checkpoint.Checkpointer(str(tmp_path), 1).restore_or_init(state)
  assert not resumed and restored is state


def _two_checkpoints(tmp_path):
  state = _state(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1)
  ckpt.save(2, state)
  ckpt.save(4, state.replace(step=state.step + 4))
  ckpt.close()
  return state


@pytest.mark.parametrize('damage', ['data', 'metadata', 'emptied'])
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous(tmp_path, damage, caplog):
  _two_checkpoints(tmp_path)
  latest = tmp_path / 'checkpoints' / '4'
  files = [p for p in latest.rglob('*') if p.is_file()]
  for p in files:
    if damage == 'data' and p.parent.name == 'd':
      p.write_bytes(b'garbage')
    elif damage == 'metadata' and p.name == '_METADATA':
      p.write_text('{not json')
    elif damage == 'emptied' and p.name != 'commit_success.txt':
      p.unlink()
  restored, resumed = checkpoint.Checkpointer(str(tmp_path), 1).restore_or_init(_state(1))
  assert resumed and int(restored.step) == 0  # the step-2 checkpoint holds the initial state
  assert (tmp_path / 'checkpoints' / 'corrupt-4').is_dir()  # set aside, not deleted
  assert 'corrupt-4' in caplog.text and str(latest) in caplog.text


def test_a_checkpoint_of_another_model_names_the_shapes_that_differ(tmp_path):
  _two_checkpoints(tmp_path)
  config = helpers.quick_config(**{'model.name': 'madry_cnn'})
  model = models.build(config.model, num_classes=10, mean=(0.5,), std=(0.25,))
  tx, _ = optim.make_optimizer(config.optim, 10, 10)
  other = train.init_state(model, tx, jax.random.key(0), (28, 28, 1))
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r'differ: .*checkpoint \('):
    checkpoint.Checkpointer(str(tmp_path), 1).restore_or_init(other)
  with pytest.raises(checkpoint.CheckpointMismatchError, match='another model or config'):
    checkpoint.load(str(tmp_path), other)
  assert (tmp_path / 'checkpoints' / '4').is_dir()  # nothing renamed or lost


def test_a_disk_that_fills_while_saving_keeps_the_previous_checkpoint(tmp_path):
  mount = tmp_path / 'small_disk'
  mount.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(mount)],
                    capture_output=True).returncode != 0:
    pytest.skip('cannot mount a small tmpfs here (needs root)')
  try:
    state = _state(0)
    ckpt = checkpoint.Checkpointer(str(mount), every_steps=1)
    ckpt.save(1, state)
    free = shutil.disk_usage(mount).free
    with open(mount / 'filler', 'wb') as f:  # leave 64 KB: too little for the next checkpoint
      f.write(b'\0' * max(0, free - 64 * 1024))
    with pytest.raises(errors.CheckpointWriteError, match='step 2.*intact.*latest: step 1'):
      ckpt.save(2, state.replace(step=state.step + 2))
    restored, resumed = checkpoint.Checkpointer(str(mount), 1).restore_or_init(_state(1))
    assert resumed and int(restored.step) == 0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(restored.params)):
      np.testing.assert_array_equal(a, b)
  finally:
    subprocess.run(['umount', '-l', str(mount)], capture_output=True)
