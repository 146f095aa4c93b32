"""EOT and BPDA let PGD break randomised and non-differentiable defenses."""

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks
from robust_jax.attacks import wrappers

_W = jax.random.normal(jax.random.key(1), (64, 4))


def linear(x):
  return x.reshape(x.shape[0], -1) @ _W


def _data():
  x = 0.3 + 0.4 * jax.random.uniform(jax.random.key(2), (64, 8, 8, 1))
  return x, jnp.argmax(linear(x), -1)


def _accuracy(fn, x, y):
  return float(jnp.mean(jnp.argmax(fn(x), -1) == y))


def test_bpda_breaks_a_quantisation_layer():
  quantise = lambda v: jnp.round(v * 4) / 4          # gradient is zero almost everywhere
  defended = lambda v: linear(quantise(v))
  x, _ = _data()
  y = jnp.argmax(defended(x), -1)
  pgd = attacks.build(dict(name='pgd', eps=0.15, steps=20, step_size=0.02))
  naive = _accuracy(defended, pgd(defended, x, y, jax.random.key(0)), y)
  through = lambda v: linear(wrappers.bpda(quantise)(v))
  adaptive = _accuracy(defended, pgd(through, x, y, jax.random.key(0)), y)
  grads = jax.grad(lambda v: jnp.sum(defended(v)))(x)
  assert float(jnp.abs(grads).max()) == 0.0            # what masks the naive attack
  assert adaptive < naive - 0.3
  np.testing.assert_array_equal(wrappers.bpda(quantise)(x), quantise(x))


def test_eot_breaks_a_randomised_defense_better_than_a_single_draw():
  def random_model(v, key):   # heavy random noise on the input, then the linear model
    return linear(v + 0.5 * jax.random.normal(key, v.shape))

  x, _ = _data()
  # Labels and accuracy under the defense's own expectation.
  expected = wrappers.eot(random_model, 64, jax.random.key(9))
  y = jnp.argmax(expected(x), -1)
  pgd = attacks.build(dict(name='pgd', eps=0.1, steps=10, step_size=0.02))
  with_eot = pgd(wrappers.eot(random_model, 16, jax.random.key(0)), x, y, jax.random.key(1))
  single = pgd(wrappers.eot(random_model, 1, jax.random.key(0)), x, y, jax.random.key(1))
  assert _accuracy(expected, with_eot, y) <= _accuracy(expected, single, y)
  assert _accuracy(expected, with_eot, y) < 0.5


def test_eot_is_deterministic_in_x_and_changes_draws_with_x():
  def random_model(v, key):
    return linear(v) + jax.random.normal(key, (v.shape[0], 4))

  fn = wrappers.eot(random_model, 2, jax.random.key(0))
  x, _ = _data()
  np.testing.assert_array_equal(fn(x), fn(x))
  assert not np.allclose(fn(x), fn(x + 1e-3))
