"""Attack invariants (property tests) and attack strength on small models."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax.attacks import spec
from robust_jax import errors

_W = jax.random.normal(jax.random.key(1), (2 * 3 * 3 * 1, 5))


def linear_logits(x):
  """A fixed linear model on 3x3x2 images with 5 classes."""
  return x.reshape(x.shape[0], -1) @ _W


def _data(seed, batch):
  x = jax.random.uniform(jax.random.key(seed), (batch, 3, 3, 2))
  y = jax.random.randint(jax.random.key(seed + 1), (batch,), 0, 5)
  return x, y


_attack_cfgs = st.fixed_dictionaries(dict(
    name=st.sampled_from(['pgd', 'fgsm']),
    norm=st.sampled_from(['linf', 'l2']),
    eps=st.floats(0.0, 2.0),
    step_size=st.floats(1e-3, 1.0),
    restarts=st.integers(1, 2),
    random_start=st.booleans(),
    loss=st.sampled_from(['ce', 'margin']),
    track_best=st.booleans(),
    steps=st.sampled_from([1, 3]),
))


def _fix(cfg):
  if cfg['name'] == 'fgsm':
    cfg['steps'] = 1
  return cfg


@functools.partial(jax.jit, static_argnums=0)
def _traced(static, x, y, key, eps, step_size):
  """eps and step_size are traced, so property tests compile once per discrete setting."""
  attack = attacks.make_pgd(eps=eps, step_size=step_size, **dict(static))
  return attack(linear_logits, x, y, key)


def _run(cfg, x, y, key):
  f = attacks.validate(cfg)
  step = f['step_size'] if f['step_size'] is not None else f['eps']
  static = tuple(sorted((k, v) for k, v in f.items()
                        if k not in ('name', 'eps', 'step_size', *spec.GENERIC)))
  return _traced(static, x, y, key, jnp.float32(f['eps']), jnp.float32(step))


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(cfg=_attack_cfgs, seed=st.integers(0, 2**16), batch=st.sampled_from([1, 4]))
def test_stays_inside_ball_and_box(cfg, seed, batch):
  cfg = _fix(cfg)
  x, y = _data(seed, batch)
  x_adv = _run(cfg, x, y, jax.random.key(seed))
  assert x_adv.shape == x.shape and x_adv.dtype == jnp.float32
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  dist = attacks.threat.distance(x_adv, x, cfg['norm'])
  assert float(dist.max()) <= cfg['eps'] * (1 + 1e-5) + 1e-6


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(cfg=_attack_cfgs, seed=st.integers(0, 2**16))
def test_eps_zero_returns_x_and_same_key_same_result(cfg, seed):
  cfg = _fix(cfg)
  x, y = _data(seed, 4)
  key = jax.random.key(seed)
  np.testing.assert_array_equal(_run(cfg, x, y, key), _run(cfg, x, y, key))
  np.testing.assert_array_equal(_run({**cfg, 'eps': 0.0}, x, y, key), x)


def test_per_example_keys_make_results_independent_of_batch_split():
  cfg = dict(name='pgd', eps=0.3, steps=3, step_size=0.1, restarts=2)
  x, y = _data(0, 8)
  keys = jax.random.split(jax.random.key(3), 8)
  whole = _run(cfg, x, y, keys)
  halves = jnp.concatenate([_run(cfg, x[:4], y[:4], keys[:4]), _run(cfg, x[4:], y[4:], keys[4:])])
  np.testing.assert_allclose(whole, halves, atol=1e-6)


def test_pgd_beats_fgsm_and_noise_on_linear_model():
  x, y = _data(5, 256)
  y = jnp.argmax(linear_logits(x), -1)  # start from correctly classified points
  key = jax.random.key(0)

  def acc(cfg):
    return float(jnp.mean(jnp.argmax(linear_logits(_run(cfg, x, y, key)), -1) == y))

  noise = acc(dict(name='pgd', eps=0.05, steps=1, step_size=1e-6))
  fgsm = acc(dict(name='fgsm', eps=0.05, step_size=0.05, random_start=False))
  pgd = acc(dict(name='pgd', eps=0.05, steps=20, step_size=0.01, restarts=2))
  assert pgd <= fgsm < noise
  assert pgd < 0.9


def test_restarts_keep_the_strongest_example():
  x, y = _data(7, 64)
  y = jnp.argmax(linear_logits(x), -1)
  key = jax.random.key(1)
  cfg = dict(name='pgd', eps=0.03, steps=2, step_size=0.005, loss='margin')
  one = [_run(cfg, x, y, jax.random.fold_in(key, r)) for r in range(1)]
  many = _run({**cfg, 'restarts': 4}, x, y, key)
  margin = lambda xa: attacks.objectives.margin(linear_logits(xa), jax.nn.one_hot(y, 5))
  # Each example's result with 4 restarts is at least as strong as the first restart alone would
  # be on average: compare with the maximum over 4 independent single runs instead.
  singles = jnp.stack([margin(_run(cfg, x, y, k)) for k in jax.random.split(key, 4)])
  assert float(jnp.mean(margin(many))) >= float(jnp.mean(singles)) - 1e-6
  assert one[0].shape == x.shape


def test_l2_projection_and_direction():
  d = jnp.ones((2, 3, 3, 2)) * jnp.array([1.0, 0.01]).reshape(2, 1, 1, 1)
  p = attacks.threat.project(d, 'l2', 0.5)
  norms = jnp.sqrt(jnp.sum(p.reshape(2, -1) ** 2, axis=1))
  np.testing.assert_allclose(norms, [0.5, 0.01 * np.sqrt(18)], rtol=1e-5)
  g = attacks.threat.ascent_direction(d, 'l2')
  np.testing.assert_allclose(jnp.sqrt(jnp.sum(g.reshape(2, -1) ** 2, axis=1)), [1, 1], rtol=1e-5)


def test_margin_positive_exactly_when_misclassified():
  logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
  m = attacks.objectives.margin(logits, jax.nn.one_hot(jnp.array([0, 0]), 3))
  np.testing.assert_allclose(m, [-1.0, 3.0])


def test_cross_entropy_matches_optax():
  import optax
  logits = jax.random.normal(jax.random.key(0), (6, 4))
  y = jnp.array([0, 1, 2, 3, 0, 1])
  np.testing.assert_allclose(
      attacks.objectives.cross_entropy(logits, jax.nn.one_hot(y, 4)),
      optax.softmax_cross_entropy_with_integer_labels(logits, y), rtol=1e-6)


@pytest.mark.parametrize('field,value,message', [
    ('name', 'cw', 'valid'), ('norm', 'l3', 'supports'), ('eps', -0.1, '>= 0'),
    ('steps', 0, '>= 1'), ('restarts', 0, '>= 1'), ('loss', 'kl', 'valid'),
    ('step_size', 0.0, '> 0'), ('eps', float('nan'), '>= 0'), ('bogus', 1, 'unknown field')])
def test_bad_configs_get_clear_errors(field, value, message):
  cfg = dict(name='pgd', eps=0.1, steps=5)
  cfg[field] = value
  with pytest.raises(errors.ConfigError, match=message):
    attacks.build(cfg, where='eval.attacks.x')


def test_describe_names_the_spec():
  assert attacks.describe(dict(name='pgd', eps=0.1, steps=40, restarts=2)) == \
      'pgd40x2_linf_0.1_ce'
  assert attacks.describe(dict(name='fgsm', eps=0.3, random_start=True)) == 'fgsm_rs_linf_0.3_ce'


def test_jit_compatible_with_any_function():
  x, y = _data(0, 4)
  fn = jax.jit(lambda x, y, k: attacks.build(dict(name='pgd', eps=0.1, steps=3))(
      lambda z: jnp.tanh(linear_logits(z)) * 3, x, y, k))
  out = fn(x, y, jax.random.key(0))
  assert out.shape == x.shape
