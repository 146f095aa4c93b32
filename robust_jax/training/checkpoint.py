"""The run's one checkpointer: named items saved by step in WORKDIR; a rerun resumes bitwise.

    ckpt = checkpoint.Checkpointer(workdir, max_to_keep=3)
    items, step = ckpt.resume({'state': state})    # ({}, None) on a fresh workdir
    ckpt.save(step, state=state, carry={'carry': delta})
    ckpt.save(step, best=state)                    # one kept: the previous best is deleted
    best = ckpt.restore('best', step, like=state)  # None when it is not on disk
    state, step = checkpoint.load(workdir, template)   # a trained run's state, for loaders

Items and their folders (the layout of earlier versions, so their workdirs resume and load):

    'state'  checkpoints/<step>/                the TrainState: what every loader reads
    'carry'  free_at_carry/checkpoints/<step>/  free AT's carried perturbation {'carry': f32[B,...]}
    'best'   monitor_best/<step>/               the best monitored epoch's TrainState (one kept)

'state' and 'carry' are saved together, the carry first, so whenever checkpoints/<s> exists so
does every item of step s; `resume` restores them all from the latest step and deletes what was
saved after it (a carry or a best epoch of steps that will be redone). 'best' has steps of its
own (training/monitor.py).

Orbax writes each step to a temporary folder and renames it when complete, so a killed run never
leaves a half-written checkpoint that looks finished. Nothing is ever loaded with pickle. On
resume, a latest step that cannot be read (a damaged disk, a copy cut short) is set aside, every
item of it renamed `corrupt-<step>` (kept for inspection, never deleted) with a warning naming
it, and the previous step is used. A checkpoint whose arrays do not match the model the config
builds raises `CheckpointMismatchError` listing the differing shapes, before anything is read.
"""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from robust_jax import errors

ITEMS = {'state': 'checkpoints', 'carry': os.path.join('free_at_carry', 'checkpoints'),
         'best': 'monitor_best'}
_SAVE_ORDER = ('carry', 'best', 'state')  # the state last: its step exists only when all do
_MANIFEST = 'robust_jax_shapes.json'


class CheckpointMismatchError(errors.ConfigError):
  """The checkpoint holds arrays of other shapes (or names) than the configured model's."""


class CheckpointReadError(OSError):
  """A finished checkpoint that cannot be read (damaged files)."""


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


def _manager(directory, max_to_keep=None):
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _abstract(state):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def _read(mngr, step_dir, step, like):
  """The item at `step` shaped like `like`; CheckpointReadError when its files are damaged."""
  check_compatible(step_dir, like)
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(_abstract(like)))
  except Exception as e:  # pylint: disable=broad-except  # any failure to read = damaged
    raise CheckpointReadError(f'{type(e).__name__}: {str(e)[:300]}') from e


def _all_hosts_read(error):
  """`error`, or a stand-in when another host could not read its copy (then all set it aside)."""
  if jax.process_count() > 1:
    failed = multihost_utils.process_allgather(np.array([error is not None]))
    if failed.any() and error is None:
      return 'unreadable on another host'
  return error


class Checkpointer:
  """The named items of one run (ITEMS); `max_to_keep` steps of 'state' and 'carry', one 'best'."""

  def __init__(self, workdir, max_to_keep=3):
    self.workdir = workdir
    self.directory = os.path.join(workdir, ITEMS['state'])
    self._max_to_keep = max_to_keep
    self._mngrs = {}

  def _dir(self, name):
    return os.path.join(self.workdir, ITEMS[name])

  def _mngr(self, name):
    """The item's orbax manager, made (and its folder created) on first use."""
    if name not in self._mngrs:
      keep = 1 if name == 'best' else self._max_to_keep
      self._mngrs[name] = _manager(self._dir(name), keep)
    return self._mngrs[name]

  def _existing(self, name):
    return name in self._mngrs or os.path.isdir(self._dir(name))

  def latest_step(self):
    return self._mngr('state').latest_step()

  def steps(self, name):
    """The finished steps of item `name` on disk."""
    return list(self._mngr(name).all_steps()) if self._existing(name) else []

  def resume(self, like):
    """(items of the latest readable step shaped like `like`, that step), or ({}, None).

    `like`: {item name: template}, 'state' among them. A step any of whose items cannot be read
    is set aside (renamed corrupt-<step>), newest first, with a warning; items saved after the
    step resumed from are deleted (those steps are redone).
    """
    while True:
      step = self.latest_step()
      if step is None:
        self._delete_after(0)
        return {}, None
      items, error = {}, None
      for name, template in like.items():
        step_dir = os.path.join(self._dir(name), str(step))
        if name != 'state' and step not in self.steps(name):
          raise CheckpointMismatchError(
              f'{os.path.join(self.directory, str(step))} has no {name!r} item ({step_dir}): it '
              'was written by another config. Use the config it was trained with, or a new '
              '--workdir.')
        try:
          items[name] = _read(self._mngr(name), step_dir, step, template)
        except CheckpointReadError as e:
          error = error or f'{step_dir}: {e}'
      error = _all_hosts_read(error)
      if error is None:
        logging.info('Resuming from %s', os.path.join(self.directory, str(step)))
        self._delete_after(step)
        return items, step
      self._set_aside(step, error, [n for n in ITEMS if n != 'best'])

  def _set_aside(self, step, error, names):
    """Renames each item's folder of `step` to corrupt-<step> (on every host), with a warning."""
    for name in names:
      if not self._existing(name):
        continue
      step_dir = os.path.join(self._dir(name), str(step))
      aside = os.path.join(self._dir(name), f'corrupt-{step}')
      logging.warning('Checkpoint %s cannot be read (%s); renamed to %s%s.', step_dir, error,
                      aside, ', trying the previous step' if name == 'state' else '')
      if jax.process_index() == 0 and os.path.exists(step_dir):
        os.replace(step_dir, aside)
      if jax.process_count() > 1:  # the others look again only once the rename is done
        multihost_utils.sync_global_devices(f'robust_jax.checkpoint.aside.{name}.{step}')
        if os.path.exists(step_dir) and jax.process_index() != 0:
          os.replace(step_dir, aside)  # a disk of its own (not shared with process 0)
      self._mngr(name).reload()

  def _delete_after(self, step):
    for name in ITEMS:
      for later in self.steps(name):
        if later > step:
          self._mngr(name).delete(later)

  def save(self, step, **items):
    """Saves the named items of `step` (the state last); CheckpointWriteError if the disk fails.

    Saving 'best' deletes the best saved before it (its manager keeps one).
    """
    step = int(step)
    for name in sorted(items, key=_SAVE_ORDER.index):
      mngr = self._mngr(name)
      try:
        mngr.save(step, args=ocp.args.StandardSave(items[name]), force=True)
        mngr.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except  # tensorstore wraps OS errors
        kept = [s for s in mngr.all_steps() if s != step]
        raise errors.CheckpointWriteError(
            f'Could not write the checkpoint of step {step} in {self._dir(name)} ({e}). The '
            f'earlier checkpoints are intact (latest: step {max(kept) if kept else "none"}); '
            'free disk space (or move --workdir) and rerun the same command to resume.') from e
      if jax.process_index() == 0:
        _write_manifest(os.path.join(self._dir(name), str(step)), items[name])

  def restore(self, name, step, like):
    """Item `name` of `step` shaped like `like`; None when not on disk or unreadable (set aside)."""
    if step not in self.steps(name):
      return None
    step_dir = os.path.join(self._dir(name), str(step))
    try:
      return _read(self._mngr(name), step_dir, step, like)
    except CheckpointReadError as e:
      self._set_aside(step, str(e), [name])
      return None

  def close(self):
    for mngr in self._mngrs.values():
      mngr.wait_until_finished()
      mngr.close()


def load(path, state):
  """Loads a state shaped like `state` from a workdir, its checkpoints/ folder or one step's folder.

  Returns (state, step). Raises FileNotFoundError naming the path when no checkpoint is there,
  CheckpointReadError naming the step's folder when its files are damaged.
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
  try:
    step = mngr.latest_step() if step is None else step
    if step is None or step not in mngr.all_steps():
      raise FileNotFoundError(f'No finished checkpoint in {directory} (steps found: '
                              f'{list(mngr.all_steps())}).')
    step_dir = os.path.join(directory, str(step))
    try:
      return _read(mngr, step_dir, step, state), step
    except CheckpointReadError as e:
      earlier = sorted(s for s in mngr.all_steps() if s < step)
      raise CheckpointReadError(
          f'The checkpoint {step_dir} cannot be read ({e}); its files are damaged. Load an '
          f'earlier step ({", ".join(os.path.join(directory, str(s)) for s in earlier) or "none"}'
          ' kept), or rerun training in its workdir: it sets the damaged step aside and resumes '
          'from the previous one.') from e
  finally:
    mngr.close()
