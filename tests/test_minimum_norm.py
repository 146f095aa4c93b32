"""Minimum-norm attacks (Carlini-Wagner L2, DeepFool) against closed-form distances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.attacks import cw
from robust_jax.attacks import deepfool
from robust_jax.attacks import objectives
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
    # These distances (0.0002-0.09) are below the L2 size of Adam's first step (about 0.04 here):
    # from c = 1e-3 (the default) that step crosses the boundary, c is bisected down and never
    # reaches the values that converge; from 1e-2 it does.
    (lambda eps: cw.make_cw_l2(eps=eps, initial_c=1e-2), 'l2'),
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



# A distilled-like model: a fixed ReLU net whose logits are scaled by 100 (a network trained at
# T = 100 and tested at T = 1), on binary images, whose pixels sit on the box's edges where the
# tanh change of variables is flattest (as most of MNIST's do).
_W1 = jax.random.normal(jax.random.key(4), (64, 32)) / 8
_W2 = jax.random.normal(jax.random.key(5), (32, 10))


def distilled(x):
  return 100.0 * (jax.nn.relu(x.reshape(x.shape[0], -1) @ _W1 - 0.1) @ _W2)


def _binary_points(n=16):
  x = (jax.random.uniform(jax.random.key(6), (n, 8, 8, 1)) < 0.3).astype(jnp.float32)
  return x, jnp.argmax(distilled(x), -1)


def _run(attack, model, x, y, judge=None):
  """(fooled bool[B], L2 distance f[B]) of `attack` on `model` (jitted), judged by `judge`."""
  x_adv = jax.jit(lambda x, y: attack(model, x, y, None))(x, y)
  fooled = np.asarray(jnp.argmax((judge or model)(x_adv), -1) != y)
  return fooled, np.asarray(threat.distance(x_adv, x, 'l2'))


def _counting(model):
  """`model` plus a host-side count of the batches it evaluates (one per Adam step)."""
  calls = []

  def counted(x):
    jax.debug.callback(lambda: calls.append(1))
    return model(x)

  return counted, calls


def test_cw_defaults_fool_every_point_of_a_distilled_model():
  """Carlini & Wagner's settings (the defaults) fool every point; the former defaults (100 steps,
  6 values of c from 0.1) fooled none: no pixel leaves the box's edge within 100 steps."""
  x, y = _binary_points()
  attack = jax.jit(lambda x, y: cw.make_cw_l2(eps=jnp.inf)(distilled, x, y, None))
  x_adv = attack(x, y)
  z = np.asarray(distilled(x_adv))
  fooled = z.argmax(-1) != np.asarray(y)
  assert fooled.all(), f'{(~fooled).sum()} of {len(y)} points not fooled'
  dist = np.asarray(threat.distance(x_adv, x, 'l2'))
  assert np.all(np.isfinite(dist)) and dist.max() < 1.5
  # Each returned point clears the boundary by more than float32 noise on logits of ~100s, so
  # that another compiled forward pass (the evaluation's) sees it misclassified too.
  margin = np.asarray(objectives.margin(jnp.asarray(z), jax.nn.one_hot(y, 10)))
  assert np.all(margin > 5e-5 * np.abs(z).max(-1)), margin / np.abs(z).max(-1)


def test_cw_abort_early_stops_stalled_examples_with_the_same_result():
  """Each example stops by itself once its loss stalls: the distances are those of the full
  1,000 steps for every c, in a fraction of the steps, and do not depend on the batch."""
  x, y = _points()
  x, y = x[:6], y[:6]
  fooled_full, dist_full = _run(cw.make_cw_l2(eps=jnp.inf, abort_early=False), linear, x, y)
  fooled, dist = _run(cw.make_cw_l2(eps=jnp.inf), linear, x, y)
  assert fooled_full.all() and fooled.all()
  np.testing.assert_allclose(dist, dist_full, rtol=1e-3)
  counted, calls = _counting(linear)
  alone = jax.jit(lambda x, y: cw.make_cw_l2(eps=jnp.inf)(counted, x, y, None))
  steps = []
  for i in range(len(y)):
    calls.clear()
    x_i = alone(x[i:i + 1], y[i:i + 1])
    steps.append(len(calls))
    np.testing.assert_allclose(threat.distance(x_i, x[i:i + 1], 'l2'), dist[i:i + 1], rtol=1e-4)
  assert max(steps) < 9 * 1000 and sum(steps) < 0.6 * len(y) * 9 * 1000, steps


def test_cw_returns_the_smallest_adversarial_example_it_evaluated():
  """Over every value of c: the host records each iterate's distance where it is misclassified."""
  x, y = _points()
  best = np.full(len(y), np.inf)

  def record(xa, logits):
    d = np.sqrt(np.sum(np.square(np.asarray(xa, np.float64) - np.asarray(x)), axis=(1, 2, 3)))
    adv = np.argmax(logits, -1) != np.asarray(y)
    best[adv] = np.minimum(best[adv], d[adv])

  def recorded(xa):
    logits = linear(xa)
    jax.debug.callback(record, xa, logits)
    return logits

  fooled, dist = _run(cw.make_cw_l2(eps=jnp.inf, steps=100, search_steps=5, initial_c=1e-2),
                      recorded, x, y, linear)
  assert fooled.all()
  np.testing.assert_allclose(dist, best, rtol=1e-4)
