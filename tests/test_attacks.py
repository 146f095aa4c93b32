"""Attack invariants (property tests) and attack strength on small models."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax.attacks import deepfool
from robust_jax.attacks import pgd
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


def _strength(x_adv, y, loss):
  """Per example: is x_adv misclassified, and its loss."""
  logits = linear_logits(x_adv)
  return (np.asarray(jnp.argmax(logits, -1) != y),
          np.asarray(attacks.objectives.get(loss)(logits, jax.nn.one_hot(y, 5))))


@pytest.mark.parametrize('loss,norm', [('margin', 'linf'), ('ce', 'l2')])
def test_restarts_keep_each_examples_strongest_run(loss, norm):
  x, y = _data(7, 64)
  y = jnp.argmax(linear_logits(x), -1)
  key, restarts = jax.random.key(1), 4
  cfg = dict(norm=norm, eps=0.03 if norm == 'linf' else 0.1, steps=2, loss=loss)
  cfg['step_size'] = cfg['eps'] / 6
  many = jax.jit(attacks.make_pgd(restarts=restarts, **cfg), static_argnums=0)(
      linear_logits, x, y, key)
  # Restart r alone: one run with the keys the attack gives restart r.
  run = jax.jit(pgd.make_pgd_run(**cfg), static_argnums=0)
  keys = pgd.restart_keys(attacks.per_example_keys(key, x.shape[0]), restarts)
  singles = [_strength(run(linear_logits, x, y, k)[0], y, loss) for k in keys]
  mis, value = _strength(many, y, loss)
  for r, (mis_r, value_r) in enumerate(singles):
    # Per example at least as strong as each run: misclassified whenever the run is, and with a
    # loss at least as high when both are (or neither is) misclassified.
    assert np.all(mis | ~mis_r), r
    assert np.all((mis != mis_r) | (value >= value_r - 1e-5 * (1 + np.abs(value_r)))), r
  # Not vacuous: the first restart and the last one are each weaker than another for some
  # example (keeping either alone would fail above).
  best_mis = np.any([m for m, _ in singles], axis=0)
  best_value = np.max([np.where(m == best_mis, v, -np.inf) for m, v in singles], axis=0)
  weaker = lambda m, v: np.any((m < best_mis) | ((m == best_mis) & (v < best_value - 1e-3)))
  assert weaker(*singles[0]) and weaker(*singles[-1])


_V1 = jax.random.normal(jax.random.key(4), (18, 16))
_V2 = jax.random.normal(jax.random.key(5), (16, 5))


def mlp_logits(x):
  """A fixed 2-layer tanh network on 3x3x2 images with 5 classes."""
  return jnp.tanh(4 * (x.reshape(x.shape[0], -1) - 0.5) @ _V1) @ _V2


def test_track_best_returns_each_examples_strongest_iterate():
  x, _ = _data(3, 64)
  y = jnp.argmax(mlp_logits(x), -1)
  cfg = dict(norm='linf', eps=0.3, step_size=0.2, random_start=False, loss='margin')
  run = lambda steps, track: jax.jit(attacks.make_pgd(steps=steps, track_best=track, **cfg),
                                     static_argnums=0)(mlp_logits, x, y, jax.random.key(0))
  margin = lambda xa: np.asarray(attacks.objectives.margin(mlp_logits(xa), jax.nn.one_hot(y, 5)))
  steps = 4
  iterates = np.stack([margin(run(k, False)) for k in range(steps + 1)])  # x^(0) = x, ..., x^(4)
  best = margin(run(steps, True))
  np.testing.assert_allclose(best, iterates.max(0), rtol=1e-5, atol=1e-6)
  assert np.any(iterates[-1] < iterates.max(0) - 1e-3)  # the last iterate is sometimes weaker


def test_random_start_draws_uniformly_from_the_ball():
  keys = jax.random.split(jax.random.key(0), 4000)
  dim, eps = 18, 0.3
  shape = (4000, 3, 3, 2)
  cube = np.asarray(attacks.threat.random_start(keys, shape, 'linf', eps)).reshape(4000, -1)
  # Each coordinate uniform on [-eps, eps]: P(|v| <= t eps) = t.
  for t in (0.25, 0.5, 0.9):
    assert abs(np.mean(np.abs(cube) <= t * eps) - t) < 0.01, t
  assert np.all(np.abs(cube) <= eps)
  ball = np.asarray(attacks.threat.random_start(keys, shape, 'l2', eps)).reshape(4000, -1)
  radius = np.linalg.norm(ball, axis=1)
  # Uniform in the L2 ball of R^18: P(|v| <= t eps) = t^18; directions uniform (mean ~ 0).
  for t in (0.8, 0.9, 0.95):
    assert abs(np.mean(radius <= t * eps) - t ** dim) < 0.03, t
  assert np.all(radius <= eps * (1 + 1e-6))
  assert np.abs(ball.mean(0)).max() < 0.1 * eps


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_pgd_random_start_moves_every_example_by_its_own_key(norm):
  x, y = _data(2, 16)
  x = 0.3 + 0.4 * x  # away from the box: x + delta needs no clipping
  attack = lambda start, key: jax.jit(attacks.make_pgd(
      norm=norm, eps=0.3, steps=1, step_size=1e-6, random_start=start), static_argnums=0)(
          linear_logits, x, y, key)
  dist = lambda xa: np.asarray(attacks.threat.distance(xa, x, norm))
  moved = attack(True, jax.random.key(0))
  # A uniform start in the 18-dimensional ball lies beyond eps / 2 (but for 2^-18 of them).
  assert np.all(dist(moved) > 0.15) and np.all(dist(moved) <= 0.3 * (1 + 1e-5))
  assert np.all(dist(moved) != dist(attack(True, jax.random.key(1))))
  assert np.all(dist(attack(False, jax.random.key(0))) < 1e-5)


def test_deepfool_with_one_candidate_steps_to_the_most_likely_other_class():
  # num_candidates=1 linearises only the class t != y of largest clean logit. On a linear model one
  # step reaches the hyperplane z_y = z_t and misclassifies: the result is at L2 distance
  # (1 + overshoot) (z_y - z_t + 1e-4) / |w_y - w_t| (overshoot 0.02), in the direction w_t - w_y.
  w = jax.random.normal(jax.random.key(6), (64, 5))
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w
  x = 0.4 + 0.2 * jax.random.uniform(jax.random.key(2), (16, 8, 8, 1))
  clean = logits_fn(x)
  y = jnp.argmax(clean, -1)
  t = jnp.argmax(jnp.where(jax.nn.one_hot(y, 5) > 0, -jnp.inf, clean), -1)
  gap = jnp.take_along_axis(clean, y[:, None], 1) - jnp.take_along_axis(clean, t[:, None], 1)
  normal = (w[:, t] - w[:, y]).T  # [B, D]
  expected = 1.02 * (gap[:, 0] + 1e-4) / jnp.linalg.norm(normal, axis=1)
  attack = deepfool.make_deepfool(norm='l2', eps=jnp.inf, num_candidates=1)
  x_adv = jax.jit(attack, static_argnums=0)(logits_fn, x, y, None)
  assert bool(jnp.all(jnp.argmax(logits_fn(x_adv), -1) != y))
  step = (x_adv - x).reshape(16, -1)
  np.testing.assert_allclose(jnp.linalg.norm(step, axis=1), expected, rtol=1e-3)
  cosine = jnp.sum(step * normal, 1) / jnp.linalg.norm(step, axis=1) / jnp.linalg.norm(normal,
                                                                                      axis=1)
  np.testing.assert_allclose(cosine, 1.0, rtol=1e-4)


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
