"""Free adversarial training (Shafahi et al. 2019, "Adversarial training for free!").

    update = free_at.make_replay_update(norm='linf', eps=0.1, step_size=0.1)   # step = eps
    delta = update(delta, grad_delta)   # delta, grad_delta: f32[B,H,W,C]

Each minibatch is replayed m times in a row (`defense.replays`). One backward pass per replay
gives both the gradient with respect to the weights, which the optimiser applies at once, and the
gradient with respect to the input perturbation delta, which takes one FGSM-like step of size eps
(`update` above) and is projected back onto the eps-ball. The model sees clip(x + delta, 0, 1).
As in the paper's Algorithm 1 and its reference code (github.com/mahyarnajibi/
FreeAdversarialTraining, free_train.py: a global perturbation tensor of batch shape, zeros at
the start), delta is carried to the next replay and on to the next minibatch: row i of a batch
starts from the perturbation that row i of the previous batch ended with. The training step keeps
the global delta f32[B,H,W,C] in `TrainState.carry`, so it is checkpointed with the weights and a
resumed run continues exactly where an uninterrupted one would.

Cost: one replay costs one forward and one backward pass, like a step of standard training, so
the training loop divides the epochs by m: `train.epochs` is a budget in epochs of standard
training and the run makes ceil(epochs * steps_per_epoch / m) minibatch steps of m updates each
(epochs / m passes over the data). `train.steps` > 0 counts minibatch steps. Learning-rate
schedules run over all updates; an epoch of `optim.warmup_epochs` is one pass over the data.
Shafahi et al. found m = 8 the best trade-off on CIFAR-10 (m in {2, 4, 8, 10}); the objective is
cross-entropy on the replayed adversarial input.
"""

import math

import jax
import jax.numpy as jnp

from robust_jax.attacks import threat
from robust_jax.defenses import descriptor


def make_replay_update(*, norm, eps, step_size):
  """Builds `update(delta, grad) -> delta`, the perturbation step taken after each replay.

  Args:
    norm: 'linf' (sign step, as in the paper) or 'l2' (unit-L2 gradient step).
    eps: radius of the ball, in [0,1] pixel scale.
    step_size: the step (Shafahi et al.: eps).

  Returns:
    update(delta, grad): `delta` f32[B,H,W,C] inside the ball, `grad` the loss's gradient with
    respect to delta (same shape). Returns delta + step_size * direction(grad), projected onto
    the ball. Clipping to [0,1] is left to the input, clip(x + delta, 0, 1), as in the reference.
  """

  def update(delta, grad):
    return threat.project(delta + step_size * threat.ascent_direction(grad, norm), norm, eps)

  return update


def facets(config):
  """Its training step runs train_attack's FGSM step after each of `defense.replays` replays.

  Read, not validated (the factory checks `replays`); a missing field reads as 1.
  """
  return descriptor.ADVERSARIAL._replace(replays=config.defense.get('replays', 1))


def num_steps(epochs, steps_per_epoch, replays):
  """Minibatch steps of a run with the cost of `epochs` epochs of standard training."""
  return max(1, math.ceil(epochs * steps_per_epoch / replays))


def run_replays(state, x, *, replays, update, objective, apply_grads, dropout_key, axis):
  """Free AT's replays of one minibatch on one device (inside the data-parallel train step).

  Args:
    state: a FreeTrainState whose `carry` f32[B,H,W,C] is the global batch's perturbation.
    x: this device's inputs f32[b,H,W,C] in [0,1], rows b * axis_index(axis) onward of the batch.
    replays: m.
    update: `update(delta, grad) -> delta` (make_replay_update).
    objective: `objective(params, batch_stats, x_adv, key) -> (mean loss, (per_example, logits,
      new_batch_stats))`, differentiable in params and x_adv.
    apply_grads: `apply_grads(state, grads, new_batch_stats) -> (state, grad_norm)`: averages
      over devices and takes one optimiser step.
    dropout_key: this device's dropout key; replay i uses fold_in(dropout_key, i).
    axis: the data-parallel axis name.

  Returns:
    (state after m updates with the new global carry, per-example losses f32[m,b] and
    logits f32[m,b,K] of each replay, grad_norm of the last update).
  """
  b = x.shape[0]
  delta = jax.lax.dynamic_slice_in_dim(state.carry, jax.lax.axis_index(axis) * b, b)

  def replay(carry, i):
    st, delta = carry

    def loss(params, d):
      return objective(params, st.batch_stats, jnp.clip(x + d, 0.0, 1.0),
                       jax.random.fold_in(dropout_key, i))

    (grads, grad_delta), (per_example, logits, new_stats) = jax.grad(
        loss, argnums=(0, 1), has_aux=True)(st.params, delta)
    st, grad_norm = apply_grads(st, grads, new_stats)
    return (st, update(delta, grad_delta)), (per_example, logits, grad_norm)

  (state, delta), (per_example, logits, norms) = jax.lax.scan(
      replay, (state, delta), jnp.arange(replays))
  carry = jax.lax.all_gather(delta, axis, tiled=True)
  return state.replace(carry=carry), per_example, logits, norms[-1]
