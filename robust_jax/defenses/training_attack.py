"""`config.train_attack`, the training attack: one full attack config, read the same way by all.

    f = training_attack.spec(config)   # {'name': 'pgd', 'norm': 'linf', 'eps': 0.1, 'steps': 7,
                                       #  'step_size': 0.035, 'restarts': 1, ...}
    m = training_attack.monitor_spec(config)   # train.monitor_attack, unset fields following f

`spec` is the only place `config.train_attack` is parsed: every defense that trains against an
attack, validation, the benchmark and the overfitting monitor read the dict it returns. It is
the attack's full field dict (robust_jax.attacks.validate), with eps a float and, for 'pgd' and
'fgsm', step_size set (unset: the attack's own default, eps for FGSM, 2.5 * eps / steps for
PGD). What each defense does with it (`REQUIRES`):

  pgd_at, mart, ensemble_at   build it as it is (attacks.build): every field is honoured.
  fgsm_rs   FGSM-RS (Wong et al. 2020) is one FGSM step (name 'fgsm') of step_size (Wong:
            1.25 * eps) from a uniform random start (random_start True) in the norm's eps-ball,
            cross-entropy, last iterate (defense.fgsm_clip_start: where the gradient is taken).
  free_at   Free AT (Shafahi et al. 2019) steps its perturbation by one FGSM step ('fgsm') of
            step_size (Shafahi: eps) after each of the defense.replays replays; it starts at
            zero (random_start False) and is carried on; the step ascends the training CE.
  trades    TRADES (Zhang et al. 2019) runs `steps` steps of step_size in the norm's eps-ball
            ('pgd', or 'fgsm' for one step) ascending its own KL(p(x) || p(x')), which stands in
            for the loss 'ce', from x + 0.001 * N(0, 1), which random_start True stands for;
            last iterate, one run.
  awp       its `defense.awp_base`'s.

A field a defense cannot honour is a ConfigError naming the field, the value it needs and why;
so are the evaluation-only fields (eot_samples, bpda, detector_penalty), which no training uses.
Defenses that train on clean inputs (standard, distillation, ...) read no attack; their
train_attack is still validated, and the monitor follows it.

The deprecated `defense.fgsm_step` (FGSM-RS's step before train_attack.step_size was) still
works: set for fgsm_rs, it logs a deprecation warning and the spec is FGSM-RS in train_attack's
norm and eps with that step, whatever train_attack's other fields say (as before).
"""

import math

from absl import logging

from robust_jax import attacks
from robust_jax import errors
from robust_jax.attacks import spec as attack_spec

# defense -> {field: (the values the defense honours, why)}. A defense absent here that trains
# against an attack (pgd_at, mart, ensemble_at) builds it as it is.
_ONE_RUN = ((1,), 'the defense runs its attack once per step')
_LAST = ((False,), 'the defense trains on the last iterate')
REQUIRES = {
    'fgsm_rs': {
        'name': (('fgsm',), 'FGSM-RS is one FGSM step of train_attack.step_size (Wong et al.: '
                 '1.25 * eps)'),
        'random_start': ((True,), 'FGSM-RS starts uniformly in the eps-ball'),
        'restarts': _ONE_RUN,
        'loss': (('ce',), 'FGSM-RS ascends the cross-entropy'),
        'track_best': _LAST,
    },
    'free_at': {
        'name': (('fgsm',), 'free AT takes one FGSM step of train_attack.step_size (Shafahi et '
                 'al.: eps) after each of defense.replays replays'),
        'random_start': ((False,), "free AT's perturbation starts at zero and is carried from "
                         'replay to replay and batch to batch'),
        'restarts': _ONE_RUN,
        'loss': (('ce',), "free AT's step ascends the training cross-entropy"),
        'track_best': _LAST,
    },
    'trades': {
        'name': (('pgd', 'fgsm'), 'TRADES runs its own PGD loop (norm, eps, steps, step_size) '
                 'on its KL term'),
        'random_start': ((True,), 'TRADES always starts at x + 0.001 * N(0, 1) (its KL has no '
                         'gradient at x), which random_start=True stands for'),
        'restarts': _ONE_RUN,
        'loss': (('ce',), "TRADES ascends its KL(p(x) || p(x')) term, which stands in for 'ce'; "
                 'it cannot use another loss'),
        'track_best': _LAST,
    },
}
ATTACKED = ('pgd_at', 'mart', 'ensemble_at', 'awp', *REQUIRES)  # defenses that train on an attack


def _defense(config):
  """The defense whose attack this is (AWP's: its base's)."""
  name, base = config.defense.name, config.defense.get('awp_base')
  return base if name == 'awp' and base in ('pgd_at', 'trades', 'mart') else name


def _legacy_fgsm_step(config, f):
  """FGSM-RS's spec from the deprecated defense.fgsm_step (None when it is unset)."""
  step = config.defense.get('fgsm_step')
  if step is None:
    return None
  ok = (isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step)
        and step > 0)
  if not ok:
    raise errors.ConfigError(f'defense.fgsm_step={step!r} must be a finite number > 0 '
                             '(defense fgsm_rs; deprecated: set train_attack.step_size).')
  logging.warning(
      'defense.fgsm_step is deprecated: FGSM-RS reads its whole attack from train_attack. '
      'defense.fgsm_step=%r is used as its step, with train_attack\'s norm and eps; its other '
      'fields are ignored. Set train_attack = dict(name=\'fgsm\', norm=%r, eps=%r, steps=1, '
      'step_size=%r, random_start=True, track_best=False) and leave defense.fgsm_step unset.',
      step, f['norm'], f['eps'], step)
  return {**attack_spec.GENERIC, **attacks.ATTACKS['fgsm'][0], 'name': 'fgsm',
          'norm': f['norm'], 'eps': f['eps'], 'step_size': float(step), 'random_start': True,
          'track_best': False}


def _check(f, defense):
  """ConfigError for the first field of spec `f` that `defense` cannot honour."""
  if defense not in ATTACKED:
    return
  for field, default in attack_spec.GENERIC.items():
    if f[field] != default:
      raise errors.ConfigError(
          f'train_attack.{field}={f[field]!r}: defense {defense} cannot honour it (training '
          'attacks the model it trains as it is: no EOT, BPDA or detector; the field is for '
          f'evaluation attacks). Set train_attack.{field}={default!r}.')
  for field, (valid, why) in REQUIRES.get(defense, {}).items():
    if f.get(field) not in valid:
      want = ' or '.join(repr(v) for v in valid)
      raise errors.ConfigError(
          f'train_attack.{field}={f.get(field)!r}: defense {defense} cannot honour it ({why}). '
          f'Set train_attack.{field}={want}.')


def spec(config):
  """The training attack's full field dict, checked against the defense; see the docstring."""
  f = attacks.validate(config.train_attack, 'train_attack')
  f['eps'] = float(f['eps'])
  defense = _defense(config)
  legacy = _legacy_fgsm_step(config, f) if defense == 'fgsm_rs' else None
  if legacy is not None:
    return legacy
  if f['name'] in ('pgd', 'fgsm') and f['step_size'] is None:
    f['step_size'] = attack_spec.default_step_size(f)
  _check(f, defense)
  return f


def monitor_spec(config):
  """`train.monitor_attack` as a full field dict: the monitor's attack (training/monitor.py).

  Its norm and eps, unset (None), follow train_attack's (`spec`); a 'pgd' monitor's step_size,
  unset, is eps / 4 (2.5 * eps over the default 10 steps, Madry et al.'s rule). Set fields are
  kept as they are.
  """
  m = dict(config.train.monitor_attack)
  if m.get('norm') is None or m.get('eps') is None:
    f = spec(config)
    for field in ('norm', 'eps'):
      if m.get(field) is None:
        m[field] = f[field]
  f = attacks.validate(m, 'train.monitor_attack')
  f['eps'] = float(f['eps'])
  if f['name'] == 'pgd' and f['step_size'] is None:
    f['step_size'] = f['eps'] / 4
  return f
