"""Training objectives, chosen by `config.defense.name`.

A defense is a pair of pure functions, used by the training step on each device's shard:

  perturb(logits_fn, x, y, keys) -> x_adv
      the adversarial inputs (gradients stopped); `logits_fn` is the model as attacks see it,
      `keys` one PRNG key per example.
  loss(forward, x, x_adv, onehot) -> (per_example_loss f32[B], logits f32[B,K], new_batch_stats)
      `forward(v) -> (logits, new_batch_stats)` is the training-mode model, differentiable in the
      parameters; `logits` are the ones training accuracy is reported on.

Defenses (`DEFENSES`; their hyper-parameters are fields of `config.defense`):

  standard  cross-entropy on clean inputs.
  pgd_at    Madry et al. 2018: cross-entropy on `train_attack`'s examples.
  trades    Zhang et al. 2019 (trades.py): CE(x) + beta * KL(p(x) || p(x_adv)); x_adv maximises
            the KL with `train_attack`'s norm, eps, steps and step_size. Field: `beta`.
  mart      Wang et al. 2020 (mart.py): boosted CE on `train_attack`'s examples + beta *
            KL(p(x) || p(x_adv)) * (1 - p_y(x)). Field: `beta` (the paper's lambda).
  fgsm_rs   Wong et al. 2020 (fast_at.py): cross-entropy on FGSM from a random start in
            `train_attack`'s eps-ball. Field: `fgsm_step` (Wong: 1.25 * eps).
  feature_squeezing  Xu, Evans & Qi 2018: trains like standard; the detector is added at
            evaluation (robust_jax/detection.py). Fields: `fpr`, `squeeze_bits`,
            `squeeze_median`, `calibration_examples`.
  ensemble  averages trained models (robust_jax/models/ensemble.py); nothing to train. Fields:
            `members`, `combine`.

Each factory validates its fields and raises `errors.ConfigError` naming the bad one.
"""

import math
from typing import Callable, NamedTuple

from robust_jax import attacks
from robust_jax import errors
from robust_jax.attacks import objectives
from robust_jax.defenses import fast_at
from robust_jax.defenses import mart
from robust_jax.defenses import trades
from robust_jax.defenses import transforms


class Defense(NamedTuple):
  perturb: Callable
  loss: Callable


def _ce_on(inputs):
  def loss(forward, x, x_adv, onehot):
    logits, stats = forward(inputs(x, x_adv))
    return objectives.cross_entropy(logits, onehot), logits, stats
  return loss


def _field(config, name, positive=False):
  """`config.defense.<name>` as a float; ConfigError unless a finite number >= 0 (> 0)."""
  value = config.defense.get(name)
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        and (value > 0 if positive else value >= 0))
  if not ok:
    raise errors.ConfigError(f'defense.{name}={value!r} must be a finite number '
                             f'{"> 0" if positive else ">= 0"} (defense {config.defense.name}).')
  return float(value)


def _inner_loop(config):
  """(norm, eps, steps, step_size) of a 'pgd'/'fgsm' train_attack, for a defense's own loop."""
  f = attacks.validate(config.train_attack, 'train_attack')
  name = config.defense.name
  if f['name'] not in ('pgd', 'fgsm') or f['restarts'] != 1:
    raise errors.ConfigError(
        f'train_attack.name={f["name"]!r}, restarts={f["restarts"]}: defense {name} runs its own '
        "inner loop and takes norm, eps, steps and step_size from a 'pgd' (or 'fgsm') "
        'train_attack with restarts=1.')
  if f['step_size'] is None:
    raise errors.ConfigError(f'train_attack.step_size must be set for defense {name}.')
  return f['norm'], float(f['eps']), f['steps'], float(f['step_size'])


def standard(config):
  del config
  return Defense(perturb=lambda logits_fn, x, y, keys: x, loss=_ce_on(lambda x, x_adv: x))


def pgd_at(config):
  """Madry et al. 2018: train on the train_attack's adversarial examples only."""
  attack = attacks.build(config.train_attack, where='train_attack')
  return Defense(perturb=attack, loss=_ce_on(lambda x, x_adv: x_adv))


def make_trades(config):
  """Zhang et al. 2019; accuracy on the clean logits."""
  beta = _field(config, 'beta')
  norm, eps, steps, step_size = _inner_loop(config)
  return Defense(
      perturb=trades.make_perturb(norm=norm, eps=eps, steps=steps, step_size=step_size),
      loss=trades.make_loss(beta))


def make_mart(config):
  """Wang et al. 2020 on the train_attack's (PGD-CE) examples; accuracy on adversarial logits."""
  beta = _field(config, 'beta')
  return Defense(perturb=attacks.build(config.train_attack, where='train_attack'),
                 loss=mart.make_loss(beta))


def make_fgsm_rs(config):
  """Wong et al. 2020: FGSM with a random start; train_attack gives only norm and eps."""
  step_size = _field(config, 'fgsm_step', positive=True)
  f = attacks.validate(config.train_attack, 'train_attack')
  return Defense(
      perturb=fast_at.make_perturb(norm=f['norm'], eps=float(f['eps']), step_size=step_size),
      loss=_ce_on(lambda x, x_adv: x_adv))


def feature_squeezing(config):
  """Xu, Evans & Qi 2018: a normally trained classifier; the detector acts at evaluation."""
  # Imported here: detection imports model_fns, which imports this package.
  from robust_jax import detection  # pylint: disable=g-import-not-at-top
  detection.fields(config)
  return standard(config)


def ensemble(config):
  """Checks defense.members and defense.combine; an ensemble is evaluated, never trained."""
  from robust_jax.models import ensemble as ensemble_lib  # pylint: disable=g-import-not-at-top
  ensemble_lib.fields(config)

  def untrainable(*args):
    del args
    raise errors.ConfigError('defense.name=ensemble has no training objective: train the '
                             'members, then evaluate the ensemble (experiment.evaluate_ensemble).')
  return Defense(perturb=untrainable, loss=untrainable)


DEFENSES = {'standard': standard, 'pgd_at': pgd_at, 'trades': make_trades, 'mart': make_mart,
            'fgsm_rs': make_fgsm_rs, 'feature_squeezing': feature_squeezing,
            'ensemble': ensemble}


def _transformed(config):
  """An input-transformation defense (transforms.py): cross-entropy through the transform."""
  transforms.from_config(config)  # validates the transform's fields
  return standard(config)


def build(config):
  name = config.defense.name
  if name in transforms.TRANSFORMS:
    return _transformed(config)
  if name not in DEFENSES:
    raise errors.ConfigError(
        f'defense.name={name!r}; valid: {sorted(set(DEFENSES) | set(transforms.TRANSFORMS))}.')
  return DEFENSES[name](config)
