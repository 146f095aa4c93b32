"""Named random streams. Everything random derives from `config.seed`:

  root_key(seed, INIT)                       model initialisation
  fold_in(root_key(seed, TRAIN), step)       training step `step`, then per stream below
  root_key(seed, EVAL)                       evaluation, then per attack and per test example
"""

import jax

INIT, TRAIN, EVAL = 0, 1, 2
AUGMENT, ATTACK, DROPOUT = 0, 1, 2
MODEL, MODEL_UNDER_ATTACK = 3, 13  # a random model's draws: final predictions; during attacks


def root_key(seed, stream):
  return jax.random.fold_in(jax.random.key(seed), stream)


@jax.jit
def _step_key(seed, step):
  return jax.random.fold_in(root_key(seed, TRAIN), step)


def step_key(seed, step):
  """Key of training step `step`: a pure function of (seed, step), so resumes are exact.

  One jitted call (the eager version is five dispatches, ~1.5 ms a step of host time that a
  2-core CPU takes from the training step itself); the same key bit for bit.
  """
  if 0 <= seed < 2**31 and 0 <= step < 2**31:
    return _step_key(seed, step)
  return jax.random.fold_in(root_key(seed, TRAIN), step)


def example_keys(key, stream, ids):
  """One key per example: `fold_in(fold_in(key, stream), id)` for each id in `ids: int32[B]`."""
  key = jax.random.fold_in(key, stream)
  return jax.vmap(jax.random.fold_in, (None, 0))(key, ids)
