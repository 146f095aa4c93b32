"""'Fast' adversarial training (Wong, Rice & Kolter 2020): FGSM from a random start.

    perturb = fast_at.make_perturb(norm='linf', eps=0.1, step_size=0.125)   # Wong: 1.25 * eps
    x_adv = perturb(logits_fn, x, y, keys)   # x: f32[B,H,W,C] in [0,1], keys: one PRNG key each

The training loss is cross-entropy on x_adv alone (as PGD-AT). The perturbation follows the
reference code (github.com/locuslab/fast_adversarial): delta ~ U(-eps, eps) per pixel, x + delta
clipped to [0,1]; one step delta += step_size * sign(grad CE); delta clipped to [-eps, eps] and
x + delta to [0,1]. That is one step of `attacks.make_pgd` with a random start, last iterate.
Their MNIST script takes the gradient at the unclipped x + delta (`clip_start=False`).
Catastrophic overfitting (robust accuracy collapsing within an epoch) is for the training loop to
monitor; this module only defines the objective.
"""

import jax
import jax.numpy as jnp

from robust_jax.attacks import objectives
from robust_jax.attacks import pgd
from robust_jax.attacks import threat
from robust_jax.defenses import descriptor

# Its training step runs train_attack (FGSM from a random start).
FACETS = descriptor.ADVERSARIAL


def make_perturb(*, norm, eps, step_size, clip_start=True):
  """Builds `perturb(logits_fn, x, y, keys) -> x_adv`: FGSM (FGM for 'l2') from a random start.

  Args:
    norm: 'linf' or 'l2'.
    eps: radius of the ball, in [0,1] pixel scale.
    step_size: the FGSM step (may exceed eps; the result is projected back onto the ball).
    clip_start: clip x + delta to [0,1] before the gradient (the authors' CIFAR-10 code); False
      takes the gradient at the unclipped random start, as their MNIST code does, and clips
      only the result.

  Returns:
    perturb(logits_fn, x, y, keys): `x` f32[B,H,W,C] in [0,1], `y` int[B], `keys` one PRNG key or
    one per example ([B]). Returns f32[B,H,W,C] inside the ball and [0,1], gradients stopped.
  """
  if clip_start:
    return pgd.make_pgd(norm=norm, eps=eps, steps=1, step_size=step_size, restarts=1,
                        random_start=True, loss='ce', track_best=False)

  def perturb(logits_fn, x, y, keys):
    keys = pgd.per_example_keys(keys, x.shape[0])
    delta = threat.random_start(keys, x.shape, norm, eps)
    onehot = jax.nn.one_hot(y, jax.eval_shape(logits_fn, x[:1]).shape[-1])
    grad = jax.grad(lambda d: jnp.sum(objectives.cross_entropy(logits_fn(x + d), onehot)))(delta)
    delta = threat.project(delta + step_size * threat.ascent_direction(grad, norm), norm, eps)
    return jax.lax.stop_gradient(jnp.clip(x + delta, 0.0, 1.0))
  return perturb
