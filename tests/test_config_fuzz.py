"""Bad input, tried wholesale (hypothesis): any value in any config field either validates or
raises ConfigError naming that field; never a traceback from deep inside a library. Malformed
attack inputs get a ValueError before anything compiles."""

import glob
import importlib.util
import math
import os

import hypothesis
import jax
import numpy as np
import pytest
from hypothesis import strategies as st

from configs import default
from robust_jax import attacks
from robust_jax import errors
from robust_jax import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leaves(cfg, prefix=''):
  for k, v in cfg.items():
    path = f'{prefix}{k}'
    if hasattr(v, 'items'):
      yield from _leaves(v, path + '.')
    else:
      yield path


def _configs():
  out = [('default', default.get_config)]
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', 'defenses', '*.py'))):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out.append((os.path.basename(path)[:-3], module.get_config))
  return out


CONFIGS = _configs()
FIELDS = sorted({(name, path) for name, get in CONFIGS for path in _leaves(get())})
WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(['', 'pgd', 'linf', 'l2', 'ce', 'nope', 'standard', 'sgd', 'cosine', '0']),
    st.lists(st.integers(-3, 3), max_size=3).map(tuple))


def _set(cfg, path, value):
  *head, last = path.split('.')
  node = cfg
  for p in head:
    node = node[p]
  with cfg.unlocked():
    node[last] = value


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
@hypothesis.given(field=st.sampled_from(FIELDS), value=WEIRD)
def test_any_value_in_any_field_validates_or_names_the_field(field, value):
  name, path = field
  cfg = dict(CONFIGS)[name]()
  try:
    _set(cfg, path, value)
  except (TypeError, ValueError, AttributeError):
    return  # ml_collections refuses the type itself (what --config.x=y reports too)
  try:
    validation.validate(cfg, 4)
  except errors.ConfigError as e:
    msg = str(e)
    assert msg and '\n' not in msg.strip()
    leaf = path.split('.')[-1]
    # The error names the field (or the defense/attack it configures).
    assert leaf in msg or path.split('.')[0] in msg or 'defense' in msg, (path, value, msg)


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(
    shape=st.sampled_from([(2, 6, 6, 1), (6, 6, 1), (2, 6, 6), (2, 36)]),
    low=st.floats(-2, 1), high=st.floats(0, 3), label=st.integers(-3, 14),
    dtype=st.sampled_from([np.float32, np.float64, np.uint8]))
def test_malformed_attack_inputs_are_value_errors_before_compiling(shape, low, high, label,
                                                                   dtype):
  attack = attacks.build(dict(name='pgd', eps=0.1, steps=1, step_size=0.1))
  logits_fn = lambda x: x.reshape(x.shape[0], -1)[:, :10]  # noqa: E731
  x = np.linspace(low, max(low, high), math.prod(shape)).reshape(shape).astype(dtype)
  y = np.full(shape[0], label)
  good = (len(shape) == 4 and dtype != np.uint8 and x.min() >= 0 and x.max() <= 1
          and 0 <= label < 10)
  if good:
    assert attack(logits_fn, x, y, jax.random.key(0)).shape == shape
  else:
    with pytest.raises(ValueError):
      attack(logits_fn, x, y, jax.random.key(0))
