"""Training objectives, chosen by `config.defense.name`.

A defense is a pair of pure functions:
  perturb(logits_fn, x, y, keys) -> x_train   the inputs the model is trained on (no gradient);
  loss(logits, onehot) -> f32[B]              the per-example training loss on those inputs.
"""

from typing import Callable, NamedTuple

from robust_jax import errors

from robust_jax import attacks
from robust_jax.attacks import objectives


class Defense(NamedTuple):
  perturb: Callable
  loss: Callable


def standard(config):
  del config
  return Defense(perturb=lambda logits_fn, x, y, keys: x, loss=objectives.cross_entropy)


def pgd_at(config):
  """Madry et al. 2018: train on the train_attack's adversarial examples only."""
  attack = attacks.build(config.train_attack, where='train_attack')
  return Defense(perturb=attack, loss=objectives.cross_entropy)


DEFENSES = {'standard': standard, 'pgd_at': pgd_at}


def build(config):
  name = config.defense.name
  if name not in DEFENSES:
    raise errors.ConfigError(f'defense.name={name!r}; valid: {sorted(DEFENSES)}.')
  return DEFENSES[name](config)
