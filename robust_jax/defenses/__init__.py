"""Training objectives, chosen by `config.defense.name`.

A defense is a pair of pure functions, used by the training step on each device's shard:

  perturb(logits_fn, x, y, keys) -> x_adv
      the adversarial inputs (gradients stopped); `logits_fn` is the model as attacks see it,
      `keys` one PRNG key per example.
  loss(forward, x, x_adv, onehot) -> (per_example_loss f32[B], logits f32[B,K], new_batch_stats)
      `forward(v) -> (logits, new_batch_stats)` is the training-mode model, differentiable in the
      parameters; `logits` are the ones training accuracy is reported on.
"""

from typing import Callable, NamedTuple

from robust_jax import attacks
from robust_jax import errors
from robust_jax.attacks import objectives


class Defense(NamedTuple):
  perturb: Callable
  loss: Callable


def _ce_on(inputs):
  def loss(forward, x, x_adv, onehot):
    logits, stats = forward(inputs(x, x_adv))
    return objectives.cross_entropy(logits, onehot), logits, stats
  return loss


def standard(config):
  del config
  return Defense(perturb=lambda logits_fn, x, y, keys: x, loss=_ce_on(lambda x, x_adv: x))


def pgd_at(config):
  """Madry et al. 2018: train on the train_attack's adversarial examples only."""
  attack = attacks.build(config.train_attack, where='train_attack')
  return Defense(perturb=attack, loss=_ce_on(lambda x, x_adv: x_adv))


DEFENSES = {'standard': standard, 'pgd_at': pgd_at}


def build(config):
  name = config.defense.name
  if name not in DEFENSES:
    raise errors.ConfigError(f'defense.name={name!r}; valid: {sorted(DEFENSES)}.')
  return DEFENSES[name](config)
