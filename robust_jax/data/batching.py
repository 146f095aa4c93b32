"""In-memory batching, pure numpy: the training order and host shares (the evaluation's padded
batches are robust_jax/eval/loop.py's).

The training batch at `step` is a pure function of `(seed, step)`, so a resumed run sees exactly
the batches an uninterrupted one would (the step, in the checkpoint, is the whole iterator state):

  idx = train_indices(seed=0, step=1234, batch_size=128, num_examples=60000)  # int64[128]
  batch = images[idx][host_slice(128, jax.process_index(), jax.process_count())]
  batch = host_batch(dataset, seed, step, 128, host_rows, num_real)  # the same, extra data mixed in

With additional data (`dataset.extra`, robust_jax/data/extra.py), `split_batch` gives each batch
its real and extra rows, `extra_mask` spreads the extra rows evenly over the batch (so every
host's and every device's share has the same mix, to a row), and each stream keeps its own
per-epoch order: the real rows walk the real set's permutations `default_rng([seed, epoch])`,
`split_batch(...)[0]` rows a step; the extra rows walk `default_rng([seed, rng.EXTRA_DATA,
epoch])` over the extra set. Each stream's epoch is one pass over its own set, so the extra
set's permutations change at their own pace.
"""

import functools

import numpy as np

from robust_jax import rng


def steps_per_epoch(num_examples, batch_size):
  """Full batches per epoch (the last partial batch is dropped)."""
  if batch_size <= 0 or num_examples < batch_size:
    raise ValueError(f'batch_size={batch_size} must be in [1, num_examples={num_examples}].')
  return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _permutation(entropy, num_examples):
  """int64[num_examples], read-only: the permutation `default_rng(list(entropy))` draws."""
  perm = np.random.default_rng(list(entropy)).permutation(num_examples)
  perm.flags.writeable = False
  return perm


def _stream_indices(stream, seed, step, batch_size, num_examples):
  """Rows of `step`'s slice of its epoch's permutation; `stream` prefixes the epoch's entropy."""
  epoch, i = divmod(int(step), steps_per_epoch(num_examples, batch_size))
  perm = _permutation((int(seed), *stream, epoch), int(num_examples))
  return perm[i * batch_size:(i + 1) * batch_size].copy()


def train_indices(seed, step, batch_size, num_examples):
  """Example indices int64[batch_size] of global training batch `step` (0-based).

  Epoch `e = step // steps_per_epoch` visits a permutation drawn from
  `default_rng([seed, e])`, in consecutive slices of `batch_size`; each example appears at most
  once per epoch. The permutation is cached, so consecutive steps cost a slice.
  """
  return _stream_indices((), seed, step, batch_size, num_examples)


def extra_indices(seed, step, batch_size, num_examples):
  """Like `train_indices`, for the additional data: epochs of `default_rng([seed, EXTRA_DATA,
  e])`. (A permutation of N examples holds N int64: 160 MB for 20M images.)"""
  return _stream_indices((rng.EXTRA_DATA,), seed, step, batch_size, num_examples)


def split_batch(batch_size, fraction):
  """(real rows, extra rows) of a batch of which `fraction` is extra data.

  The real rows are batch_size * (1 - fraction) rounded to the nearest integer (halves up); the
  extra rows the rest.

  >>> split_batch(1024, 0.7), split_batch(512, 0.7), split_batch(128, 0.0)
  ((307, 717), (154, 358), (128, 0))
  """
  real = int(np.floor(batch_size * (1.0 - fraction) + 0.5))
  return real, batch_size - real


def extra_mask(batch_size, num_extra):
  """bool[batch_size]: which rows of a global batch hold extra data, spread evenly.

  Row r is extra when floor((r + 1) * e / B) > floor(r * e / B): any run of k consecutive rows
  (one host's or one device's share) holds k * e / B extra rows, rounded down or up.
  """
  r = np.arange(batch_size, dtype=np.int64)
  return (r + 1) * num_extra // batch_size > r * num_extra // batch_size


def mixed_indices(seed, step, batch_size, fraction, num_real, num_extra):
  """(is_extra bool[B], idx int64[B]) of global training batch `step` with extra data mixed in.

  Rows where `is_extra` is set index the extra set (`extra_indices`), the others the real
  training set (`train_indices` at the real rows' batch size); see the module docstring.
  """
  n_real, n_extra = split_batch(batch_size, fraction)
  is_extra = extra_mask(batch_size, n_extra)
  idx = np.empty(batch_size, np.int64)
  idx[~is_extra] = train_indices(seed, step, n_real, num_real)
  idx[is_extra] = extra_indices(seed, step, n_extra, num_extra)
  return is_extra, idx


def host_batch(dataset, seed, step, batch_size, host_rows, num_real):
  """{'image': uint8[b,H,W,C], 'label': int32[b]}: rows `host_rows` of global batch `step`.

  `dataset` has `train_images`, `train_labels` (arrays, or on-disk columns indexed with int
  arrays) and `extra` (None, or an ExtraSet with `fraction`, `size` and `read(idx)`); only the
  first `num_real` training examples are drawn (the monitor holds out the rest). Without extra
  data this is `train_indices` sliced to the host's rows; with it, each host reads only its own
  rows of both sets.
  """
  extra = getattr(dataset, 'extra', None)
  if extra is None:
    idx = train_indices(seed, step, batch_size, num_real)[host_rows]
    return {'image': dataset.train_images[idx], 'label': dataset.train_labels[idx]}
  is_extra, idx = mixed_indices(seed, step, batch_size, extra.fraction, num_real, extra.size)
  is_extra, idx = is_extra[host_rows], idx[host_rows]
  images = np.empty((len(idx),) + tuple(dataset.train_images.shape[1:]), np.uint8)
  labels = np.empty(len(idx), np.int32)
  real = ~is_extra
  images[real] = dataset.train_images[idx[real]]
  labels[real] = dataset.train_labels[idx[real]]
  images[is_extra], labels[is_extra] = extra.read(idx[is_extra])
  return {'image': images, 'label': labels}


def host_slice(global_batch_size, process_index, process_count):
  """The rows of a global batch that host `process_index` of `process_count` loads."""
  if global_batch_size % process_count:
    raise ValueError(f'The global batch size {global_batch_size} is not divisible by the '
                     f'{process_count} hosts.')
  per_host = global_batch_size // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)
