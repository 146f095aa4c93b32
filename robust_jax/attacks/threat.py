"""Threat models: projections onto eps-balls, random starts and steepest-ascent directions.

Every function works on a batch `x: f32[B,...]` and treats each example separately; `eps` is a
scalar in [0,1] pixel scale.
"""

import jax
import jax.numpy as jnp

NORMS = ('linf', 'l2')
_TINY = 1e-12


def _per_example_l2(v):
  """||v_b||_2 for each example, shaped [B,1,...,1] to broadcast against v."""
  axes = tuple(range(1, v.ndim))
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))


def project(delta, norm, eps):
  """Projects perturbations `delta: f32[B,...]` onto the `norm` ball of radius `eps`."""
  if norm == 'linf':
    return jnp.clip(delta, -eps, eps)
  if norm == 'l2':
    scale = jnp.minimum(1.0, eps / (_per_example_l2(delta) + _TINY))
    return delta * scale
  raise ValueError(f'Unknown norm {norm!r}; valid: {NORMS}.')


def random_start(keys, shape, norm, eps):
  """Uniform samples from the ball, one per-example key each.

  Args:
    keys: per-example PRNG keys, shape [B].
    shape: full batch shape (B, ...).
    norm: 'linf' or 'l2'.
    eps: radius.
  Returns:
    f32[shape], each example drawn with its own key (independent of how the batch is split).
  """
  ex_shape = shape[1:]
  if norm == 'linf':
    return jax.vmap(lambda k: jax.random.uniform(k, ex_shape, minval=-eps, maxval=eps))(keys)
  if norm == 'l2':
    dim = 1
    for s in ex_shape:
      dim *= s

    def one(k):
      k_dir, k_rad = jax.random.split(k)
      direction = jax.random.normal(k_dir, ex_shape)
      direction = direction / (jnp.linalg.norm(direction) + _TINY)
      radius = eps * jax.random.uniform(k_rad) ** (1.0 / dim)
      return direction * radius
    return jax.vmap(one)(keys)
  raise ValueError(f'Unknown norm {norm!r}; valid: {NORMS}.')


def ascent_direction(grad, norm):
  """The steepest-ascent direction of unit `norm` for each example of `grad: f32[B,...]`."""
  if norm == 'linf':
    return jnp.sign(grad)
  if norm == 'l2':
    return grad / (_per_example_l2(grad) + _TINY)
  raise ValueError(f'Unknown norm {norm!r}; valid: {NORMS}.')


def distance(x_adv, x, norm):
  """Per-example `norm` distance, f32[B]."""
  d = (x_adv - x).reshape(x.shape[0], -1)
  if norm == 'linf':
    return jnp.max(jnp.abs(d), axis=1)
  if norm == 'l2':
    return jnp.sqrt(jnp.sum(jnp.square(d), axis=1))
  if norm == 'l1':
    return jnp.sum(jnp.abs(d), axis=1)
  raise ValueError(f'Unknown norm {norm!r}; valid: {NORMS + ("l1",)}.')
