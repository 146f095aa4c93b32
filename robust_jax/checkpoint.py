"""Orbax checkpoints in `WORKDIR/checkpoints/<step>/`; a rerun of the same command resumes.

Orbax writes each step to a temporary folder and renames it when complete, so a killed run never
leaves a half-written checkpoint that looks finished. Nothing is ever loaded with pickle.

On resume, a latest checkpoint that cannot be read (a damaged disk, a copy cut short) is renamed
`corrupt-<step>` (kept for inspection, never deleted) with a warning naming it, and the previous
one is used. A checkpoint whose arrays do not match the model the config builds raises
`CheckpointMismatchError` listing the differing shapes, before anything is restored.
"""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from robust_jax import errors


class CheckpointMismatchError(errors.ConfigError):
  """The checkpoint holds arrays of other shapes (or names) than the configured model's."""


def _key(path):
  return str(tuple(str(getattr(p, 'key', getattr(p, 'name', getattr(p, 'idx', p)))) for p in path))


def _stored_shapes(step_dir):
  """{key path: global shape} of the step's arrays, from orbax's JSON metadata (None if unreadable).

  Empty nodes ({} batch statistics, None EMA) hold no arrays and are left out on both sides.
  """
  try:
    md = ocp.PyTreeCheckpointer().metadata(os.path.join(step_dir, 'default'))
    tree = getattr(md, 'item_metadata', md)
    tree = getattr(tree, 'tree', tree)
    return {_key(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if hasattr(leaf, 'shape')}
  except Exception:  # pylint: disable=broad-except  # unreadable: restore fails and reports it
    return None


def _expected_shapes(state):
  return {_key(path): tuple(getattr(leaf, 'shape', ()))
          for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


_MANIFEST = 'robust_jax_shapes.json'


def _write_manifest(step_dir, state):
  """Records the state's array shapes beside orbax's files (JSON, written atomically)."""
  tmp = os.path.join(step_dir, _MANIFEST + '.tmp')
  with open(tmp, 'w') as f:
    json.dump({k: list(v) for k, v in _expected_shapes(state).items()}, f)
  os.replace(tmp, os.path.join(step_dir, _MANIFEST))


def _manifest(step_dir):
  try:
    with open(os.path.join(step_dir, _MANIFEST)) as f:
      return {k: tuple(v) for k, v in json.load(f).items()}
  except (OSError, ValueError, AttributeError, TypeError):
    return None


def check_compatible(step_dir, state):
  """Raises CheckpointMismatchError when the stored arrays differ from `state`'s.

  The shapes come from the manifest robust_jax writes with each checkpoint; without one, from
  orbax's metadata, where arrays missing from a damaged checkpoint are not called a mismatch
  (restoring it fails and it is treated as corrupt).
  """
  expected = _expected_shapes(state)
  stored = _manifest(step_dir)
  if stored is None:
    stored = _stored_shapes(step_dir)
    if stored is None:
      return  # unreadable metadata: restoring will fail and report it
    stored_keys_ok = set(stored) <= set(expected)
    if stored_keys_ok and all(stored[k] == expected[k] for k in stored):
      return
  elif set(stored) == set(expected) and all(stored[k] == expected[k] for k in stored):
    return
  diffs = [f'{k}: checkpoint {stored.get(k, "absent")} vs config {expected.get(k, "absent")}'
           for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k)]
  raise CheckpointMismatchError(
      f'The checkpoint in {step_dir} was written by another model or config; '
      f'{len(diffs)} array(s) differ: ' + '; '.join(diffs[:8]) + ('; ...' if len(diffs) > 8 else '')
      + '. Use the config it was trained with, or a new --workdir.')


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
    """Returns (the latest readable saved state, or `state` when none; whether it restored).

    Unreadable checkpoints are set aside (renamed corrupt-<step>) newest first, with a warning.
    """
    while True:
      step = self._mngr.latest_step()
      if step is None:
        return state, False
      step_dir = os.path.join(self.directory, str(step))
      check_compatible(step_dir, state)
      error = None
      try:
        restored = self._mngr.restore(step, args=ocp.args.StandardRestore(_abstract(state)))
      except Exception as e:  # pylint: disable=broad-except  # any failure to read = corrupt
        if isinstance(e, CheckpointMismatchError):
          raise
        error = f'{type(e).__name__}: {str(e)[:300]}'
      if jax.process_count() > 1:  # set aside on every host, or on none
        failed = multihost_utils.process_allgather(np.array([error is not None]))
        if failed.any() and error is None:
          error = 'unreadable on another host'
      if error is None:
        logging.info('Resuming from %s', step_dir)
        return restored, True
      aside = os.path.join(self.directory, f'corrupt-{step}')
      logging.warning('Checkpoint %s cannot be read (%s); renamed to %s, trying the previous '
                      'one.', step_dir, error, aside)
      if jax.process_index() == 0 and os.path.exists(step_dir):
        os.replace(step_dir, aside)
      if jax.process_count() > 1:  # the others look again only once the rename is done
        multihost_utils.sync_global_devices(f'robust_jax.checkpoint.aside.{step}')
        if os.path.exists(step_dir) and jax.process_index() != 0:
          os.replace(step_dir, aside)  # a disk of its own (not shared with process 0)
      self._mngr.reload()

  def save(self, step, state, force=False):
    """Saves when `step` is on the interval (or `force`); returns whether it saved."""
    try:
      saved = self._mngr.save(int(step), args=ocp.args.StandardSave(state), force=force)
      if saved:
        self._mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # tensorstore wraps OS errors
      kept = [s for s in self._mngr.all_steps() if s != int(step)]
      raise errors.CheckpointWriteError(
          f'Could not write the checkpoint of step {step} in {self.directory} ({e}). The '
          f'earlier checkpoints are intact (latest: step {max(kept) if kept else "none"}); '
          'free disk space (or move --workdir) and rerun the same command to resume.') from e
    if saved:
      self._mngr.wait_until_finished()
      if jax.process_index() == 0:
        _write_manifest(os.path.join(self.directory, str(int(step))), state)
    return saved

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
  check_compatible(os.path.join(directory, str(step)), state)
  restored = mngr.restore(step, args=ocp.args.StandardRestore(_abstract(state)))
  mngr.close()
  return restored, step
