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
catastrophic-overfitting monitor all run their batches through `run`. A short subset (the points
still robust in a cascade) may instead run in smaller fixed sizes (`bucket_sizes`), and an attack
in stages runs each stage on the examples not yet fooled (`run_staged`).

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


MIN_BUCKET = 64  # smallest re-batched size, unless the model's bits allow less (batch_invariance)
ROW_GRANULE = 8  # a short subset's batch: its rows rounded up to a multiple of this


def bucket_sizes(batch_size, num_devices=1, n=None, small_ok=None):
  """The batch sizes `n` rows (a phase's subset; None: unknown) may be cut into: batch_size, the
  rows left after whole batches rounded up to a multiple of ROW_GRANULE, at least MIN_BUCKET
  (one padded batch for a subset shorter than a batch: the points still robust in a cascade,
  which run thousands of model passes each; per image, a Square query on small_cnn was ~25%
  cheaper at 256-384 rows than at 64 on 2 cores, and costs the same per image from 331 to 448
  rows, so padding is work thrown away), and MIN_BUCKET itself (for the few rows left when most
  are settled). Each size is a multiple of `num_devices` (MIN_BUCKET and ROW_GRANULE rounded up
  first). Each jitted function compiles for at most these three shapes (compiling is a large
  part of an attack on a small subset). From MIN_BUCKET rows up, the models' logits and input
  gradients were bitwise the same at every batch size tried (64 to 520 rows, odd ones included;
  BENCHMARKS.md), so these sizes do not change any example's result.

  `small_ok(size) -> bool`: whether the model gives the same bits in a batch of `size` <
  MIN_BUCKET rows as in a MIN_BUCKET-row one (`batch_invariance`); the rows left then run at
  their rounded size below MIN_BUCKET when it says so (46 points as 48 rows, not 64).
  """
  up = lambda v, m: -(-v // m) * m
  small = up(MIN_BUCKET, num_devices)
  sizes = [batch_size]
  rest = 0 if n is None else n % batch_size
  if rest:
    size = up(rest, up(ROW_GRANULE, num_devices))
    if size < small and not (small_ok is not None and small_ok(size)):
      size = small
    sizes.append(min(batch_size, size))
  sizes.append(small)
  return tuple(sorted({s for s in sizes if s <= batch_size}, reverse=True))


def batch_invariance(logits_fn, variables, x):
  """`ok(size) -> bool`: are `logits_fn(variables)`'s logits and input gradients for the first
  `size` rows of `x` (f32[MIN_BUCKET,...]) bitwise the same in a `size`-row batch as in the
  MIN_BUCKET-row batch `x`? XLA picks its kernels by shape, so a kernel whose rounding depends on
  the batch size shows here (small_cnn's first dense layer changed below 51 rows until its
  forward product was padded, `models.fast_ops.dot_general`; madry_cnn and PreAct ResNet-18 gave
  the same bits from 2 and 4 rows). Nothing runs before the first call; each
  size is checked once (one compile of the model's forward and backward pass at that shape)."""
  num_classes = jax.eval_shape(lambda v, a: logits_fn(v)(a), variables, x[:1]).shape[-1]
  w = jax.random.normal(jax.random.key(0), (num_classes,))

  @jax.jit
  def run(v, a):
    logits, vjp = jax.vjp(logits_fn(v), a)
    return logits, vjp(jax.numpy.broadcast_to(w, logits.shape))[0]

  ref, seen = [], {}

  def ok(size):
    if size not in seen:
      if not ref:
        ref.extend(np.asarray(a) for a in run(variables, x))
      got = run(variables, x[:size])
      seen[size] = all(np.array_equal(a[:size], np.asarray(b)) for a, b in zip(ref, got))
    return seen[size]

  return ok


PAD_FRACTION = 4  # one padded batch when at most 1/PAD_FRACTION of its rows are padding


def batches(subset, batch_size, pad_rows=None, buckets=()):
  """Yields (start, valid, rows int[size]): consecutive slices of `subset`, of `batch_size` rows
  or of one of the smaller `buckets`: the rows left go into one batch of the smallest size that
  holds them if at most 1/PAD_FRACTION of it is padding; otherwise each slice takes the largest
  size that the rows left fill, else the smallest size, padded with `pad_rows` (default: row 0)
  after its `valid` real rows."""
  subset = np.asarray(subset)
  sizes = sorted({batch_size, *buckets}, reverse=True)
  start = 0
  while start < len(subset):
    left = len(subset) - start
    fit = min((b for b in sizes if b >= left), default=None)
    if fit is not None and (fit - left) * PAD_FRACTION <= fit:
      size = fit
    else:
      size = next((b for b in sizes if b <= left), sizes[-1])
    rows = subset[start:start + size]
    valid = len(rows)
    if valid < size:
      pad = (np.zeros(size - valid, rows.dtype) if pad_rows is None
             else np.asarray(pad_rows[:size - valid], rows.dtype))
      rows = np.concatenate([rows, pad])
    yield start, valid, rows
    start += valid


def run(fn, arrays, subset, batch_size, outputs, *, mesh=None, bar=None, store=None, phase='',
        pad_rows=None, buckets=()):
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
    buckets: smaller batch sizes the last rows may run in (`bucket_sizes`), instead of one batch
      padded to batch_size; `fn` then sees batches of those sizes too.
  Returns:
    {name: dtype[len(subset), ...]} per entry of `outputs`, in the order of `subset`.
  """
  file_key, state = (None, blank_state(len(subset), outputs)) if store is None else store.load(
      phase, subset, outputs)
  for start, valid, rows in batches(subset, batch_size, pad_rows, buckets):
    if not state['done'][start:start + valid].all():
      host_rows = slice(None)
      if mesh is not None:
        host_rows = data_lib.host_slice(len(rows), jax.process_index(), jax.process_count())
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


def run_staged(step, num_stages, arrays, subset, batch_size, carry, outputs, *, buckets=(),
               mesh=None, bar=None, store=None, phase=''):
  """`run` for an attack in stages (attacks/stages.py): each stage runs only on the examples of
  `subset` not yet settled, re-batched (`buckets`), so the work shrinks as examples are settled.

  Args:
    step: `(batch, s) -> (*carry, settled, *outputs)`, one jitted function for every call: s = 0
      starts the attack (the carry in `batch` is not read), s = 1 .. num_stages runs stage s - 1.
      `batch` holds `arrays`' rows and each example's carry as 'carry0', 'carry1', ...; settled:
      bool[B], the examples no later stage can change; outputs as in `run`, for the carry the
      call returns (so an example's outputs are those of the last stage it ran).
    carry: [(dtype, per-example shape)] of the carry's arrays.
    The rest as in `run`. `store` keeps the final outputs only: a resumed evaluation whose phase
    is on disk skips it, one killed in the middle of the stages starts them again.
  Returns:
    {name: dtype[len(subset), ...]} per entry of `outputs`, in the order of `subset`.
  """
  subset = np.asarray(subset)
  file_key, final = None, None
  if store is not None:
    file_key, final = store.load(phase, subset, outputs)
  if final is None or not final['done'].all():
    spec = {**{f'carry{j}': c for j, c in enumerate(carry)}, 'settled': np.bool_, **outputs}
    state = blank_state(len(subset), spec)
    local = {name: np.asarray(a)[subset] for name, a in arrays.items()}
    carried = {name: state[name] for name in spec if name.startswith('carry')}
    for s in range(num_stages + 1):
      todo = np.flatnonzero(~state['settled']) if s else np.arange(len(subset))
      if not len(todo):
        break
      out = run(lambda b, s=s: step(b, s), {**local, **carried}, todo, batch_size, spec,
                mesh=mesh, buckets=buckets)
      for name in spec:
        state[name][todo] = out[name]
    final = {'done': np.ones(len(subset), bool), **{name: state[name] for name in outputs}}
    if store is not None:
      store.save(phase, file_key, final)
  if bar is not None:
    bar.update(len(subset))
  return {name: final[name].copy() for name in outputs}
