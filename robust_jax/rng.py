"""Named random streams: every stream number of the library is here, once. Everything random
derives from `config.seed`:

  root_key(seed, INIT)                       model initialisation
  fold_in(root_key(seed, TRAIN), step)       training step `step`, then per stream below
  root_key(seed, EVAL)                       evaluation, then per attack and per test example
  root_key(seed, MONITOR)                    the catastrophic-overfitting monitor's attack

The training data's order is drawn with numpy (robust_jax/data/batching.py), per epoch of each
stream: the real training set from `default_rng([seed, epoch])`, the additional data
(config.data.extra) from `default_rng([seed, EXTRA_DATA, epoch])`.

The values are part of every stored result: changing one changes the numbers a seed gives.
Streams of different levels may share a value (they fold into different keys).
"""

import jax

# Root streams: root_key(seed, stream).
INIT, TRAIN, EVAL, MONITOR = 0, 1, 2, 3

# Streams of a training step's key (step_key), per example through example_keys where the
# draw is per example.
AUGMENT, ATTACK, DROPOUT = 0, 1, 2
ENSEMBLE_SOURCE = 0x5EC  # ensemble_at: the batch's choice of source model
# Streams of a device's dropout key (fold_in(fold_in(step key, DROPOUT), device)).
DROPOUT_PROXY = 1  # AWP: the dropout key of the proxy gradient's forward pass
RANDOM_MODEL_TRAIN = 1  # a random model's per-example draws in a training forward pass

# Per-example streams of an evaluation key (example_keys): ATTACK above, and a random model's
# draws for the final predictions and during the attack.
MODEL, MODEL_UNDER_ATTACK = 3, 13
# Keys of root_key(seed, EVAL): eval.attacks[i] at EVAL_ATTACKS + i, the suite's attack i at
# EVAL_SUITE + i, the sanity checks, the example adversarial images of the report, and the
# randomised-smoothing certification (the clean pass uses the root key itself).
EVAL_ATTACKS, EVAL_SUITE, EVAL_SANITY, EVAL_SAMPLES, CERTIFY = 0, 1000, 2000, 3000, 5000
# Certification: per-example keys of stream CERTIFY_EXAMPLES, then per example the noise of the
# n0 selection votes and of the n estimation votes.
CERTIFY_EXAMPLES = 0
CERTIFY_SELECT, CERTIFY_ESTIMATE = 0, 1

# The additional training data's order (numpy entropy, see the module docstring).
EXTRA_DATA = 0xE7A

# Not a stream: the key of a random model's draws when the caller gives none.
DEFAULT_MODEL_SEED = 7


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
