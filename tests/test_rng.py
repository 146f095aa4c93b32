"""The named random streams (robust_jax/rng.py): fixed numbers, and no stream numbered elsewhere."""

import os
import re

from robust_jax import rng

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stream_numbers_are_the_ones_stored_results_were_drawn_with():
  # Renumbering a stream changes what every seed gives: these values are part of the results.
  assert (rng.INIT, rng.TRAIN, rng.EVAL, rng.MONITOR) == (0, 1, 2, 3)
  assert (rng.AUGMENT, rng.ATTACK, rng.DROPOUT, rng.ENSEMBLE_SOURCE) == (0, 1, 2, 0x5EC)
  assert (rng.DROPOUT_PROXY, rng.RANDOM_MODEL_TRAIN) == (1, 1)
  assert (rng.MODEL, rng.MODEL_UNDER_ATTACK) == (3, 13)
  assert (rng.EVAL_ATTACKS, rng.EVAL_SUITE, rng.EVAL_SANITY, rng.EVAL_SAMPLES,
          rng.CERTIFY) == (0, 1000, 2000, 3000, 5000)
  assert (rng.CERTIFY_EXAMPLES, rng.CERTIFY_SELECT, rng.CERTIFY_ESTIMATE) == (0, 0, 1)
  assert rng.DEFAULT_MODEL_SEED == 7


def test_no_module_but_rng_numbers_a_stream():
  """fold_in / root_key / example_keys take a name from rng.py (or a loop index), not a literal
  number, and no module keeps its own stream constant."""
  literal = re.compile(r'(fold_in|root_key|example_keys)\((?:[^()]|\([^()]*\))*?,\s*\d')
  constant = re.compile(r'^_?[A-Z_]*(STREAM|_KEY|SEED)[A-Z_]*\s*=\s*(0x)?\d', re.M)
  found = []
  for folder, _, files in os.walk(os.path.join(ROOT, 'robust_jax')):
    for name in files:
      path = os.path.join(folder, name)
      if not name.endswith('.py') or path == os.path.join(ROOT, 'robust_jax', 'rng.py'):
        continue
      with open(path) as f:
        text = f.read()
      found += [f'{path}: {m.group(0)}' for m in literal.finditer(text)]
      found += [f'{path}: {m.group(0)}' for m in constant.finditer(text)]
  assert not found, found
