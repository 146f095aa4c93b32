"""Minimum-norm attacks (Carlini-Wagner L2, DeepFool) against closed-form distances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.attacks import cw
from robust_jax.attacks import deepfool
from robust_jax.attacks import threat

_W = jax.random.normal(jax.random.key(1), (64, 5))


def linear(x):
  return x.reshape(x.shape[0], -1) @ _W


def _points():
  # Away from the box edges, so the [0,1] constraint does not bind.
  x = 0.4 + 0.2 * jax.random.uniform(jax.random.key(2), (16, 8, 8, 1))
  return x, jnp.argmax(linear(x), -1)


def _true_distance(x, y, norm):
  """Closed-form distance to the nearest class boundary of the linear model."""
  z = linear(x)
  dual = {'l2': 2, 'linf': 1}[norm]
  out = []
  for i in range(x.shape[0]):
    out.append(min(abs(float(z[i, y[i]] - z[i, j])) /
                   float(jnp.linalg.norm(_W[:, y[i]] - _W[:, j], ord=dual))
                   for j in range(5) if j != y[i]))
  return np.array(out)


@pytest.mark.parametrize('make,norm', [
    (lambda eps: deepfool.make_deepfool(norm='l2', eps=eps), 'l2'),
    (lambda eps: deepfool.make_deepfool(norm='linf', eps=eps), 'linf'),
    (lambda eps: cw.make_cw_l2(eps=eps, steps=200), 'l2'),
])
def test_finds_the_nearest_boundary_and_respects_eps(make, norm):
  x, y = _points()
  true = _true_distance(x, y, norm)
  x_adv = jax.jit(lambda x, y: make(jnp.inf)(linear, x, y, jax.random.key(0)))(x, y)
  assert bool(jnp.all(jnp.argmax(linear(x_adv), -1) != y))
  found = np.asarray(threat.distance(x_adv, x, norm))
  np.testing.assert_allclose(found, true, rtol=0.08, atol=2e-3)
  # With eps below each point's distance nothing is returned; the result stays x.
  eps = float(true.min()) * 0.5
  x_small = jax.jit(lambda x, y: make(eps)(linear, x, y, jax.random.key(0)))(x, y)
  np.testing.assert_array_equal(x_small, x)


def test_cw_output_stays_in_box():
  x = jax.random.uniform(jax.random.key(3), (8, 8, 8, 1))
  y = jnp.argmax(linear(x), -1)
  x_adv = cw.make_cw_l2(eps=jnp.inf, steps=20)(linear, x, y, None)
  assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
