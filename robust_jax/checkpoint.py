"""Orbax checkpoints in `WORKDIR/checkpoints/<step>/`; a rerun of the same command resumes.

Orbax writes each step to a temporary folder and renames it when complete, so a killed run never
leaves a half-written checkpoint that looks finished. Nothing is ever loaded with pickle.
"""

import os

import jax
import orbax.checkpoint as ocp
from absl import logging


def _manager(directory, every_steps=1, max_to_keep=3):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=max(1, every_steps), create=True,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _abstract(state):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


class Checkpointer:
  """Saves the training state every `every_steps` steps; keeps `max_to_keep` of them."""

  def __init__(self, workdir, every_steps, max_to_keep=3):
    self.directory = os.path.join(workdir, 'checkpoints')
    self._mngr = _manager(self.directory, every_steps, max_to_keep)

  def latest_step(self):
    return self._mngr.latest_step()

  def restore_or_init(self, state):
    """Returns (the latest saved state, or `state` when none; whether it was restored)."""
    step = self._mngr.latest_step()
    if step is None:
      return state, False
    logging.info('Resuming from %s/%d', self.directory, step)
    restored = self._mngr.restore(step, args=ocp.args.StandardRestore(_abstract(state)))
    return restored, True

  def save(self, step, state, force=False):
    """Saves when `step` is on the interval (or `force`); returns whether it saved."""
    return self._mngr.save(int(step), args=ocp.args.StandardSave(state), force=force)

  def close(self):
    self._mngr.wait_until_finished()
    self._mngr.close()


def load(path, state):
  """Loads a state shaped like `state` from a workdir, its checkpoints/ folder or one step's folder.

  Raises FileNotFoundError naming the path when no checkpoint is there.
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  base = os.path.basename(path.rstrip('/'))
  if base.isdigit() and os.path.isdir(path):
    directory, step = os.path.dirname(path), int(base)
  else:
    directory, step = path, None
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'No checkpoint at {path}: expected a workdir, its checkpoints/ '
                            'folder, or one step folder checkpoints/<step>.')
  mngr = _manager(directory)
  step = mngr.latest_step() if step is None else step
  if step is None or step not in mngr.all_steps():
    raise FileNotFoundError(f'No finished checkpoint in {directory} (steps found: '
                            f'{list(mngr.all_steps())}).')
  restored = mngr.restore(step, args=ocp.args.StandardRestore(_abstract(state)))
  mngr.close()
  return restored, step
