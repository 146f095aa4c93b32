"""MART (Wang et al. 2020): boosted cross-entropy on x_adv plus a KL term weighted by 1 - p_y(x).

    loss = mart.make_loss(beta=6.0)        # beta is the paper's lambda
    per_example, adv_logits, batch_stats = loss(forward, x, x_adv, onehot)

x_adv comes from PGD on the cross-entropy (the training attack). Per example, with p = softmax:

    BCE(p(x_adv), y) + beta * KL(p(x) || p(x_adv)) * (1 - p_y(x)),
    BCE = -log p_y(x_adv) - log(1 - max_{k != y} p_k(x_adv)).

The reference code (github.com/YisenWang/MART, mart.py) writes the second BCE term as
log(1.0001 - p_k + 1e-12); here it is computed exactly as a log-sum-exp over the classes other than
k, which is finite without the offsets. As in the reference, the choice of k carries no gradient,
and gradients flow through both p(x) and p(x_adv).
"""

import jax
import jax.numpy as jnp

from robust_jax.attacks import objectives
from robust_jax.defenses import descriptor
from robust_jax.defenses import trades

# Its training step runs train_attack (PGD on cross-entropy).
FACETS = descriptor.ADVERSARIAL


def boosted_cross_entropy(logits, onehot):
  """-log p_y - log(1 - max_{k != y} p_k) of each example.

  Args:
    logits: f32[B,K], K >= 2.
    onehot: f32[B,K] one-hot labels.
  Returns:
    f32[B] >= 0.
  """
  wrong = jnp.where(onehot > 0, -jnp.inf, logits)
  top_wrong = jax.nn.one_hot(jnp.argmax(wrong, axis=-1), logits.shape[-1], dtype=bool)
  # log(1 - p_k) = log(sum_{j != k} p_j) = logsumexp_{j != k} z_j - logsumexp_j z_j.
  log_not_top = (jax.nn.logsumexp(jnp.where(top_wrong, -jnp.inf, logits), axis=-1)
                 - jax.nn.logsumexp(logits, axis=-1))
  return objectives.cross_entropy(logits, onehot) - log_not_top


def make_loss(beta):
  """Builds the MART loss (`beta` = the paper's lambda).

  `loss(forward, x, x_adv, onehot) -> (f32[B], adversarial logits f32[B,K], batch_stats)`. The model
  runs on x, then on x_adv; the BatchNorm statistics returned are those of the adversarial pass.
  Training accuracy is reported on the adversarial logits.
  """

  def loss(forward, x, x_adv, onehot):
    clean_logits, _ = forward(x)
    adv_logits, batch_stats = forward(x_adv)
    p_true = jnp.sum(onehot * jax.nn.softmax(clean_logits), axis=-1)
    per_example = (boosted_cross_entropy(adv_logits, onehot)
                   + beta * trades.kl_divergence(clean_logits, adv_logits) * (1.0 - p_true))
    return per_example, adv_logits, batch_stats

  return loss
