"""Per-example attack objectives (to be maximised), from logits and one-hot labels.

`logits: f32[B,K]`, `onehot: f32[B,K]`; every function returns f32[B]. Cross-entropy goes through
a one-hot product rather than a gather, so its backward pass has no scatter.
"""

import jax
import jax.numpy as jnp


def cross_entropy(logits, onehot):
  """Softmax cross-entropy of the true class."""
  return -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)


def margin(logits, onehot):
  """Carlini-Wagner margin: max_{j != y} z_j - z_y (> 0 exactly when misclassified)."""
  true_logit = jnp.sum(onehot * logits, axis=-1)
  other = jnp.max(jnp.where(onehot > 0, -jnp.inf, logits), axis=-1)
  return other - true_logit


LOSSES = {'ce': cross_entropy, 'margin': margin}


def get(name):
  if name not in LOSSES:
    raise ValueError(f'Unknown attack loss {name!r}; valid: {sorted(LOSSES)}.')
  return LOSSES[name]
