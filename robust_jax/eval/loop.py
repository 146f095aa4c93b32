"""The one evaluation batch loop: pad the last batch, shard over devices and hosts, gather, count
progress, and keep each finished batch on disk so a killed evaluation resumes.

    out = loop.run(lambda b: fn(params, batch_stats, b['x'], b['y'], b['i'], key),
                   {'x': images, 'y': labels, 'i': np.arange(n, dtype=np.int32)},
                   subset, batch_size, {'correct': np.bool_, 'outside': np.bool_},
                   mesh=mesh, bar=bar, store=store, phase='clean')
    out['correct']                                   # bool[len(subset)], in the subset's order

Every example of `subset` is computed exactly once: the batches are its consecutive slices of
`batch_size` rows, the last one padded (with row 0 of the arrays unless told otherwise) and the
padding dropped from the outputs, so counts are sums over real examples only. The evaluators
(robust accuracy, detection, randomised smoothing, the sanity checks) and the training loop's
catastrophic-overfitting monitor all run their batches through `run`.

An evaluation attacks exactly the model it scores: the network in inference mode (`BN_MODE`,
BatchNorm with its running statistics), so no example's result depends on the other examples of
its batch or on the padding.
"""

import hashlib
import json
import os

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from robust_jax import data as data_lib
from robust_jax import parallel
from robust_jax import version

BN_MODE = 'eval'  # evaluations attack and score the inference-mode model


def progress_bar(total, desc, progress=True):
  """A tqdm bar over `total` images, shown by process 0 only and only when `progress`."""
  return tqdm.tqdm(total=total, desc=desc, unit='img', dynamic_ncols=True,
                   disable=not progress or jax.process_index() != 0, mininterval=2.0)


def blank_state(n, outputs):
  """{'done': bool[n], name: dtype[n, *shape], ...}, all zero: the per-example outputs of a phase.

  `outputs`: {name: dtype} or {name: (dtype, per-example shape)}.
  """
  state = {'done': np.zeros(n, bool)}
  for name, spec in outputs.items():
    dtype, shape = spec if isinstance(spec, tuple) else (spec, ())
    state[name] = np.zeros((n, *shape), dtype)
  return state


class Progress:
  """Per-batch evaluation results on disk, so a killed evaluation resumes where it stopped.

  One file per evaluation phase (`<dir>/<phase>.npz`: positions done, and each output), written
  atomically by process 0 after every batch. A file is used only when its fingerprint (the eval
  config, the seed, the phase's test indices and a checksum of the weights) matches, so changed
  weights or settings start the phase afresh. Batch results do not depend on which batches ran
  before (per-example attack keys), so a resumed evaluation gives the same numbers.
  """

  def __init__(self, directory, fingerprint):
    self.directory = directory
    self.fingerprint = fingerprint
    if jax.process_index() == 0:
      os.makedirs(directory, exist_ok=True)

  def _path(self, phase):
    return os.path.join(self.directory, phase.replace('/', '_') + '.npz')

  def load(self, phase, subset, outputs):
    """(key, {'done': bool[n], name: dtype[n] for each of `outputs`}) over the examples `subset`,
    from disk when the file's key (fingerprint and subset) matches, else all zero."""
    key = hashlib.sha256(self.fingerprint.encode() + np.asarray(subset).tobytes()).hexdigest()
    state = blank_state(len(subset), outputs)
    try:
      with np.load(self._path(phase), allow_pickle=False) as f:
        if str(f['key']) == key and all(f[k].shape == v.shape and f[k].dtype == v.dtype
                                        for k, v in state.items()):
          state = {k: f[k].copy() for k in state}
    except (OSError, ValueError, KeyError):
      pass
    if jax.process_count() > 1:  # every process takes process 0's view (writable copies)
      state = {k: np.array(multihost_utils.broadcast_one_to_all(v)) for k, v in state.items()}
    return key, state

  def save(self, phase, key, state):
    if jax.process_index() != 0:
      return
    path = self._path(phase)
    with open(path + '.tmp', 'wb') as f:
      np.savez(f, key=np.asarray(key), **state)
    os.replace(path + '.tmp', path)


def fingerprint(config, params, batch_stats):
  """A digest of what an evaluation's per-example results depend on: the eval, model, defense
  and data configs, the seed, the library's source (so results saved by older code, e.g. before
  an attack fix, are never reused) and the weights."""
  h = hashlib.sha256()
  h.update(json.dumps({'eval': config.eval.to_dict(), 'seed': config.seed,
                       'model': config.model.to_dict(), 'defense': config.defense.to_dict(),
                       'data': config.data.to_dict(), 'source': version.source_digest()},
                      sort_keys=True, default=str).encode())
  for leaf in jax.tree.leaves((params, batch_stats)):
    h.update(np.ascontiguousarray(np.asarray(jax.device_get(leaf), np.float32)).tobytes())
  return h.hexdigest()


def store_for(progress_dir, config, params, batch_stats):
  """The `Progress` store in `progress_dir` for these weights, or None when it is None/empty."""
  if not progress_dir:
    return None
  return Progress(progress_dir, fingerprint(config, params, batch_stats))


def batches(subset, batch_size, pad_rows=None):
  """Yields (start, valid, rows int[batch_size]): consecutive slices of `subset`, the last one
  padded with `pad_rows` (default: row 0) after its `valid` real rows."""
  subset = np.asarray(subset)
  for start in range(0, len(subset), batch_size):
    rows = subset[start:start + batch_size]
    valid = len(rows)
    if valid < batch_size:
      pad = (np.zeros(batch_size - valid, rows.dtype) if pad_rows is None
             else np.asarray(pad_rows[:batch_size - valid], rows.dtype))
      rows = np.concatenate([rows, pad])
    yield start, valid, rows


def run(fn, arrays, subset, batch_size, outputs, *, mesh=None, bar=None, store=None, phase='',
        pad_rows=None):
  """Runs `fn` over the rows `subset` of `arrays` in padded batches; returns its outputs per row.

  Args:
    fn: `batch -> tuple of arrays [batch_size, ...]`, one per entry of `outputs`; `batch` is
      {name: array[rows]} for each of `arrays`, sharded over `mesh` (each host loads its rows).
    arrays: {name: array indexable by row}, e.g. images, labels and test-set indices.
    subset: int[n], the rows to run on (e.g. test-set indices).
    batch_size: the global batch size (divisible by the devices when `mesh` is given).
    outputs: {name: dtype} or {name: (dtype, per-example shape)}, in the order `fn` returns them.
    mesh: the data mesh; None runs on this process's default device, unsharded.
    bar: a progress bar advanced by each batch's real examples, or None.
    store: a `Progress`; batches finished by an earlier, killed run are read back and each new
      batch is saved as soon as it is done. None keeps nothing.
    phase: the store's name for this run.
    pad_rows: the rows that pad the last batch (default: row 0 repeated).
  Returns:
    {name: dtype[len(subset), ...]} per entry of `outputs`, in the order of `subset`.
  """
  host_rows = slice(None)
  if mesh is not None:
    host_rows = data_lib.host_slice(batch_size, jax.process_index(), jax.process_count())
  file_key, state = (None, blank_state(len(subset), outputs)) if store is None else store.load(
      phase, subset, outputs)
  for start, valid, rows in batches(subset, batch_size, pad_rows):
    if not state['done'][start:start + valid].all():
      batch = {name: a[rows][host_rows] for name, a in arrays.items()}
      got = fn(batch if mesh is None else parallel.shard_batch(batch, mesh))
      for name, a in zip(outputs, got):
        if mesh is not None:
          a = multihost_utils.process_allgather(a, tiled=True)
        state[name][start:start + valid] = np.asarray(a)[:valid]
      state['done'][start:start + valid] = True
      if store is not None:
        store.save(phase, file_key, state)
    if bar is not None:
      bar.update(valid)
  return {name: state[name].copy() for name in outputs}
