"""Adversarial weight perturbation (AWP; Wu, Xia & Wang 2020) on top of an adversarial objective.

    weight_perturb = awp.make_weight_perturb(gamma=5e-3, warmup_epochs=0.0)
    v = weight_perturb(params, proxy_grads, epoch)    # same tree as params

Each training step of AWP:
  1. x_adv comes from the base defense's attack at the current weights w (PGD-AT, TRADES, MART);
  2. one ascent step on the weights: with g the gradient of the base loss on (x, x_adv) at w,
     every weight tensor l (convolution and dense kernels; biases and normalisation parameters,
     the tensors with at most one dimension, are left alone) moves by
         v_l = gamma * ||w_l|| * g_l / ||g_l||     (Frobenius norms; layer-wise relative size);
  3. the gradient of the base loss is taken at w + v and applied by the optimiser to w, so the
     perturbation is "restored" (it never stays in the weights).

This follows the authors' code (github.com/csdongxian/AWP, utils_awp.py): a proxy copy of the
model takes one normalised ascent step on the same loss, only multi-dimensional weights are
perturbed, the update computed at w + v is applied and v is then subtracted. Their optimiser acts
on w + v before the subtraction, which differs from applying the update to w only in weight decay
(here it sees w). gamma = 5e-3 is the paper's value. AWP starts after `warmup_epochs` epochs: the
authors' TRADES-AWP script waits 10 epochs (of 200); PGD-AT-AWP starts at once.
"""

import jax
import jax.numpy as jnp

from robust_jax.defenses import descriptor

# Every awp_base (pgd_at, trades, mart) runs train_attack; the weight perturbation is on top.
FACETS = descriptor.ADVERSARIAL

_TINY = 1e-20  # as the reference, so a zero gradient gives a zero perturbation


def perturbation(params, grads, gamma):
  """v = gamma * ||w_l|| * g_l / ||g_l|| for every weight tensor with >= 2 dims, 0 elsewhere.

  Args:
    params: the weights w (a pytree of arrays).
    grads: the gradient of the adversarial loss at w (same tree), ascended.
    gamma: the relative size of the perturbation of each layer.
  Returns:
    the tree v, f32 like params.
  """

  def one(w, g):
    if w.ndim <= 1:
      return jnp.zeros_like(w)
    return gamma * jnp.linalg.norm(w) * g / (jnp.linalg.norm(g) + _TINY)

  return jax.tree.map(one, params, grads)


def make_weight_perturb(*, gamma, warmup_epochs=0.0):
  """Builds `weight_perturb(params, grads, epoch) -> v`; v is zero before `warmup_epochs`.

  `epoch` is a float scalar (training step / steps per epoch), traced inside the train step.
  """

  def weight_perturb(params, grads, epoch):
    on = (epoch >= warmup_epochs).astype(jnp.float32)
    return jax.tree.map(lambda v: on * v, perturbation(params, grads, gamma))

  return weight_perturb
