"""The run's checkpointer (training/checkpoint.py): round trip, loading from a workdir or a step
folder, named items, damaged and mismatched checkpoints, a full disk."""

import shutil
import subprocess

import jax
import numpy as np
import pytest

from robust_jax import errors
from robust_jax import models
from robust_jax.training import checkpoint
from robust_jax.training import optim
from robust_jax.training import state as state_lib
from tests import helpers


def _restore_or_init(workdir, template):
  """(the latest state, or `template`; whether one was restored), as the loop resumes."""
  ckpt = checkpoint.Checkpointer(str(workdir))
  items, step = ckpt.resume({'state': template})
  ckpt.close()
  return items.get('state', template), step is not None


def _state(seed):
  config = helpers.quick_config()
  model = models.build(config.model, num_classes=10, mean=(0.5,), std=(0.25,))
  tx, _ = optim.make_optimizer(config.optim, 10, 10)
  return state_lib.init_state(model, tx, jax.random.key(seed), (28, 28, 1))


def test_round_trip_and_load_paths(tmp_path):
  state = _state(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(3, state=state)
  ckpt.save(5, state=state.replace(step=state.step + 5))
  ckpt.close()
  template = _state(1)
  restored, resumed = _restore_or_init(tmp_path, template)
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
  restored, resumed = _restore_or_init(tmp_path, state)
  assert not resumed and restored is state


def _two_checkpoints(tmp_path):
  state = _state(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(2, state=state)
  ckpt.save(4, state=state.replace(step=state.step + 4))
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
  restored, resumed = _restore_or_init(tmp_path, _state(1))
  assert resumed and int(restored.step) == 0  # the step-2 checkpoint holds the initial state
  assert (tmp_path / 'checkpoints' / 'corrupt-4').is_dir()  # set aside, not deleted
  assert 'corrupt-4' in caplog.text and str(latest) in caplog.text


def test_a_checkpoint_of_another_model_names_the_shapes_that_differ(tmp_path):
  _two_checkpoints(tmp_path)
  config = helpers.quick_config(**{'model.name': 'madry_cnn'})
  model = models.build(config.model, num_classes=10, mean=(0.5,), std=(0.25,))
  tx, _ = optim.make_optimizer(config.optim, 10, 10)
  other = state_lib.init_state(model, tx, jax.random.key(0), (28, 28, 1))
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r'differ: .*checkpoint \('):
    _restore_or_init(tmp_path, other)
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
    ckpt = checkpoint.Checkpointer(str(mount))
    ckpt.save(1, state=state)
    free = shutil.disk_usage(mount).free
    with open(mount / 'filler', 'wb') as f:  # leave 64 KB: too little for the next checkpoint
      f.write(b'\0' * max(0, free - 64 * 1024))
    with pytest.raises(errors.CheckpointWriteError, match='step 2.*intact.*latest: step 1'):
      ckpt.save(2, state=state.replace(step=state.step + 2))
    restored, resumed = _restore_or_init(mount, _state(1))
    assert resumed and int(restored.step) == 0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(restored.params)):
      np.testing.assert_array_equal(a, b)
  finally:
    subprocess.run(['umount', '-l', str(mount)], capture_output=True)


def _carry(value):
  return {'carry': np.full((4, 28, 28, 1), value, np.float32)}


def _damage(step_dir):
  for p in step_dir.rglob('*'):
    if p.is_file() and p.parent.name == 'd':
      p.write_bytes(b'garbage')


def test_items_are_where_earlier_versions_put_them(tmp_path):
  """The layout of the three checkpoint owners before one checkpointer: old workdirs resume."""
  state = _state(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(3, state=state, carry=_carry(1.0))
  ckpt.save(3, best=state)
  ckpt.close()
  for folder in ('checkpoints/3', 'free_at_carry/checkpoints/3', 'monitor_best/3'):
    assert (tmp_path / folder / 'default').is_dir(), folder


def test_a_step_with_an_unreadable_carry_is_set_aside_whole(tmp_path, caplog):
  state = _state(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(2, state=state, carry=_carry(2.0))
  ckpt.save(4, state=state.replace(step=state.step + 4), carry=_carry(4.0))
  ckpt.close()
  _damage(tmp_path / 'free_at_carry' / 'checkpoints' / '4')
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  items, step = ckpt.resume({'state': _state(1), 'carry': _carry(0.0)})
  assert step == 2 and int(items['state'].step) == 0 and items['carry']['carry'].max() == 2.0
  assert ckpt.latest_step() == 2
  ckpt.close()
  for folder in ('checkpoints', 'free_at_carry/checkpoints'):  # both items, kept for inspection
    assert (tmp_path / folder / 'corrupt-4').is_dir() and not (tmp_path / folder / '4').exists()
  assert 'free_at_carry/checkpoints/4' in caplog.text


def test_resume_deletes_the_items_of_steps_it_redoes(tmp_path):
  """A kill after the carry and the best epoch of step 4 were saved, before its state was."""
  state = _state(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(2, state=state, carry=_carry(2.0))
  ckpt.save(2, best=state)
  ckpt.save(4, carry=_carry(4.0))
  ckpt.save(4, best=state)
  ckpt.close()
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  items, step = ckpt.resume({'state': _state(1), 'carry': _carry(0.0)})
  assert step == 2 and items['carry']['carry'].max() == 2.0
  assert ckpt.steps('carry') == [2] and ckpt.steps('best') == []
  ckpt.save(4, state=state, carry=_carry(4.0))  # the redone step saves again
  assert ckpt.steps('carry') == [2, 4] and ckpt.latest_step() == 4
  ckpt.close()


def test_a_missing_item_is_a_clear_error(tmp_path):
  _two_checkpoints(tmp_path)  # no carry: written by a run without free AT
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoint.CheckpointMismatchError, match="no 'carry' item.*another config"):
    ckpt.resume({'state': _state(1), 'carry': _carry(0.0)})
  ckpt.close()
  assert (tmp_path / 'checkpoints' / '4').is_dir()  # nothing renamed or lost


def test_one_best_is_kept_and_an_unreadable_one_is_set_aside(tmp_path, caplog):
  state = _state(0)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(2, best=state)
  ckpt.save(4, best=state.replace(step=state.step + 4))
  assert ckpt.steps('best') == [4]
  assert int(ckpt.restore('best', 4, like=_state(1)).step) == 4
  assert ckpt.restore('best', 2, like=_state(1)) is None  # not on disk
  _damage(tmp_path / 'monitor_best' / '4')
  assert ckpt.restore('best', 4, like=_state(1)) is None
  ckpt.close()
  assert (tmp_path / 'monitor_best' / 'corrupt-4').is_dir() and 'monitor_best/4' in caplog.text


def test_loading_a_damaged_checkpoint_names_it_and_the_fix(tmp_path):
  _two_checkpoints(tmp_path)
  _damage(tmp_path / 'checkpoints' / '4')
  with pytest.raises(checkpoint.CheckpointReadError,
                     match=r'checkpoints/4 cannot be read .*damaged\. Load an earlier step '
                           r'\(.*checkpoints/2 kept\)'):
    checkpoint.load(str(tmp_path), _state(1))
  assert (tmp_path / 'checkpoints' / '4').is_dir()  # loading renames nothing
  restored, step = checkpoint.load(str(tmp_path / 'checkpoints' / '2'), _state(1))
  assert step == 2 and int(restored.step) == 0
