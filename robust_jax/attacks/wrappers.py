"""Wrappers that let gradient attacks see through defenses built to defeat them.

  eot(random_logits_fn, samples, key)   randomised model -> deterministic function whose gradient
                                        is the average over `samples` draws (Athalye et al. 2018)
  bpda(transform, approx=None)          non-differentiable transform -> same forward pass, the
                                        gradient of `approx` (identity by default) backward
"""

import jax
import jax.numpy as jnp


def _content_key(key, x):
  """A key that changes whenever x does, so each attack step draws fresh randomness."""
  flat = jax.lax.stop_gradient(x).reshape(-1)
  weights = jax.random.uniform(jax.random.key(12345), flat.shape, minval=0.5, maxval=1.5)
  h = jnp.sum(flat * weights)
  return jax.random.fold_in(key, jax.lax.bitcast_convert_type(h, jnp.uint32))


def eot(random_logits_fn, samples, key):
  """Expectation over Transformation for a randomised model.

  Args:
    random_logits_fn: `(x: f32[B,H,W,C], key) -> f32[B,K]`, random in `key`.
    samples: number of draws averaged per call.
    key: base PRNG key.
  Returns:
    `logits_fn(x) -> f32[B,K]`: the mean over draws of the log-probabilities. Cross-entropy and
    margin losses of these average the per-draw losses' gradients; the draws change with x, so
    every attack step sees new randomness, and the same inputs always see the same draws.
  """

  def logits_fn(x):
    keys = jax.random.split(_content_key(key, x), samples)
    draws = jax.vmap(lambda k: jax.nn.log_softmax(random_logits_fn(x, k)))(keys)
    return jnp.mean(draws, axis=0)

  return logits_fn


def bpda(transform, approx=None):
  """Backward Pass Differentiable Approximation of a (non-differentiable) input transform.

  Returns `t(x)` whose value is `transform(x)` and whose gradient is that of `approx(x)`
  (identity when None): `approx(x) + stop_gradient(transform(x) - approx(x))`.
  """
  approx = (lambda v: v) if approx is None else approx

  def wrapped(x):
    a = approx(x)
    return a + jax.lax.stop_gradient(transform(x) - a)

  return wrapped
