"""TRADES (Zhang et al. 2019): clean cross-entropy plus beta times KL(p(x) || p(x_adv)).

    perturb = trades.make_perturb(norm='linf', eps=0.1, steps=10, step_size=0.02)
    x_adv = perturb(logits_fn, x, y, keys)   # x: f32[B,H,W,C] in [0,1], keys: one PRNG key each
    loss = trades.make_loss(beta=6.0)
    per_example, clean_logits, batch_stats = loss(forward, x, x_adv, onehot)

The inner maximisation starts at x + start_std * N(0, 1) and takes sign (L-inf) or normalised (L2)
gradient steps on KL(p(x) || p(x')), where p(x) is computed once and held fixed; every iterate is
projected onto the eps-ball around x and onto [0,1]. The outer loss differentiates through both
p(x) and p(x_adv), as the reference code does (github.com/yaodongyu/TRADES, trades.py).
"""

import jax
import jax.numpy as jnp

from robust_jax.attacks import objectives
from robust_jax.attacks import pgd
from robust_jax.attacks import threat
from robust_jax.defenses import descriptor

# Its training step runs train_attack (its norm, eps, steps, step_size) on the KL.
FACETS = descriptor.ADVERSARIAL


def kl_divergence(p_logits, q_logits):
  """KL(softmax(p) || softmax(q)) of each example, summed over classes.

  Args:
    p_logits: f32[B,K] logits of the reference distribution (TRADES: the clean prediction).
    q_logits: f32[B,K] logits of the other distribution (the adversarial prediction).
  Returns:
    f32[B] >= 0. Its batch mean is PyTorch's `KLDivLoss(reduction='batchmean')`.
  """
  log_p = jax.nn.log_softmax(p_logits)
  log_q = jax.nn.log_softmax(q_logits)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def make_perturb(*, norm, eps, steps, step_size, start_std=0.001):
  """Builds `perturb(logits_fn, x, y, keys) -> x_adv`, TRADES' KL-maximising inner loop.

  Args:
    norm: 'linf' (sign steps) or 'l2' (unit-L2 gradient steps).
    eps: radius of the ball, in [0,1] pixel scale.
    steps: gradient steps, run in a `lax.fori_loop`.
    step_size: step length in the norm's unit.
    start_std: standard deviation of the Gaussian start around x (the KL's gradient is zero at
      x itself); TRADES uses 0.001.

  Returns:
    perturb(logits_fn, x, y, keys): `logits_fn` maps f32[B,H,W,C] in [0,1] to f32[B,K], `x`
    f32[B,H,W,C] in [0,1], `y` int[B] (unused: the objective needs no label), `keys` one PRNG
    key or one per example ([B]; per-example keys make the result independent of how a batch is
    split over devices). Returns f32[B,H,W,C] inside the ball and [0,1], gradients stopped.
  """

  def perturb(logits_fn, x, y, keys):
    del y
    keys = pgd.per_example_keys(keys, x.shape[0])
    clean_logits = jax.lax.stop_gradient(logits_fn(x))

    def feasible(xa):
      return jnp.clip(x + threat.project(xa - x, norm, eps), 0.0, 1.0)

    def objective(xa):
      return jnp.sum(kl_divergence(clean_logits, logits_fn(xa)))

    grad_fn = jax.grad(objective)

    def body(_, xa):
      return feasible(xa + step_size * threat.ascent_direction(grad_fn(xa), norm))

    noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
    x_adv = jax.lax.fori_loop(0, steps, body, feasible(x + start_std * noise))
    return jax.lax.stop_gradient(x_adv)

  return perturb


def make_loss(beta):
  """Builds the TRADES loss: CE(f(x), y) + beta * KL(p(x) || p(x_adv)) per example.

  `loss(forward, x, x_adv, onehot) -> (f32[B], clean logits f32[B,K], batch_stats)`. The model
  runs on x, then on x_adv (each normalised by its own batch's statistics, as in PyTorch); the
  BatchNorm statistics returned are those of the adversarial forward pass. Training accuracy is
  reported on the clean logits.
  """

  def loss(forward, x, x_adv, onehot):
    clean_logits, _ = forward(x)
    adv_logits, batch_stats = forward(x_adv)
    per_example = (objectives.cross_entropy(clean_logits, onehot)
                   + beta * kl_divergence(clean_logits, adv_logits))
    return per_example, clean_logits, batch_stats

  return loss
