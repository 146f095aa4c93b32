"""In-memory batching, pure numpy: the training order and host shares (the evaluation's padded
batches are robust_jax/eval/loop.py's).

The training batch at `step` is a pure function of `(seed, step)`, so a resumed run sees exactly
the batches an uninterrupted one would:

  idx = train_indices(seed=0, step=1234, batch_size=128, num_examples=60000)  # int64[128]
  batch = images[idx][host_slice(128, jax.process_index(), jax.process_count())]
"""

import functools

import numpy as np


def steps_per_epoch(num_examples, batch_size):
  """Full batches per epoch (the last partial batch is dropped)."""
  if batch_size <= 0 or num_examples < batch_size:
    raise ValueError(f'batch_size={batch_size} must be in [1, num_examples={num_examples}].')
  return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed, epoch, num_examples):
  """int64[num_examples], read-only: the order of epoch `epoch` (seed >= 0)."""
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False
  return perm


def train_indices(seed, step, batch_size, num_examples):
  """Example indices int64[batch_size] of global training batch `step` (0-based).

  Epoch `e = step // steps_per_epoch` visits a permutation drawn from
  `default_rng([seed, e])`, in consecutive slices of `batch_size`; each example appears at most
  once per epoch. The permutation is cached, so consecutive steps cost a slice.
  """
  epoch, i = divmod(int(step), steps_per_epoch(num_examples, batch_size))
  perm = _epoch_permutation(int(seed), epoch, int(num_examples))
  return perm[i * batch_size:(i + 1) * batch_size].copy()


def host_slice(global_batch_size, process_index, process_count):
  """The rows of a global batch that host `process_index` of `process_count` loads."""
  if global_batch_size % process_count:
    raise ValueError(f'The global batch size {global_batch_size} is not divisible by the '
                     f'{process_count} hosts.')
  per_host = global_batch_size // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)
