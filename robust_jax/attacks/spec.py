"""Attack configs: validation, construction and canonical names.

An attack config holds plain values: `name`, `norm`, `eps`, `steps`, `step_size`, `restarts`,
`random_start`, `loss` and optionally `track_best`.
"""

import math

from robust_jax import errors

from robust_jax.attacks import objectives
from robust_jax.attacks import pgd
from robust_jax.attacks import threat

ATTACKS = ('fgsm', 'pgd')
_DEFAULTS = dict(norm='linf', eps=0.0, steps=1, step_size=None, restarts=1, random_start=True,
                 loss='ce', track_best=True)


def _fields(cfg):
  cfg = dict(cfg)
  out = dict(_DEFAULTS)
  out.update(cfg)
  unknown = set(out) - set(_DEFAULTS) - {'name'}
  if unknown:
    raise errors.ConfigError(
        f'Unknown attack field(s) {sorted(unknown)}; valid: {sorted(_DEFAULTS)}.')
  return out


def validate(cfg, where='attack'):
  """Raises ValueError naming the field (`where.field`) and the valid choices."""
  f = _fields(cfg)
  name = f.get('name')
  if name not in ATTACKS:
    raise errors.ConfigError(f'{where}.name={name!r} is not an attack; valid: {list(ATTACKS)}.')
  if f['norm'] not in threat.NORMS:
    raise errors.ConfigError(f'{where}.norm={f["norm"]!r}; valid: {list(threat.NORMS)}.')
  if f['loss'] not in objectives.LOSSES:
    raise errors.ConfigError(f'{where}.loss={f["loss"]!r}; valid: {sorted(objectives.LOSSES)}.')
  eps = f['eps']
  if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
    raise errors.ConfigError(
        f'{where}.eps={eps!r} must be a finite number >= 0 (pixel scale [0,1]).')
  for field in ('steps', 'restarts'):
    v = f[field]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise errors.ConfigError(f'{where}.{field}={v!r} must be an integer >= 1.')
  if name == 'fgsm' and f['steps'] != 1:
    raise errors.ConfigError(
        f'{where}.steps={f["steps"]} but FGSM takes exactly 1 step; use name=pgd.')
  step = f['step_size']
  if step is not None and (not isinstance(step, (int, float)) or not math.isfinite(step)
                           or step <= 0):
    raise errors.ConfigError(f'{where}.step_size={step!r} must be a finite number > 0.')
  return f


def build(cfg, where='attack'):
  """Returns `attack(logits_fn, x, y, key) -> x_adv` for a validated attack config."""
  f = validate(cfg, where)
  step = f['step_size']
  if step is None:  # FGSM steps the whole radius; PGD defaults to 2.5 eps / steps (Madry).
    step = f['eps'] if f['name'] == 'fgsm' else 2.5 * f['eps'] / f['steps']
  return pgd.make_pgd(norm=f['norm'], eps=float(f['eps']), steps=f['steps'],
                      step_size=float(step), restarts=f['restarts'],
                      random_start=bool(f['random_start']), loss=f['loss'],
                      track_best=bool(f['track_best']))


def describe(cfg):
  """A canonical metric name holding the attack's spec, e.g. 'pgd40x2_linf_0.1_ce'."""
  f = _fields(cfg)
  steps = '' if f['name'] == 'fgsm' else str(f['steps'])
  restarts = f'x{f["restarts"]}' if f['restarts'] > 1 else ''
  rs = '_rs' if f['name'] == 'fgsm' and f['random_start'] else ''
  return f'{f["name"]}{steps}{restarts}{rs}_{f["norm"]}_{f["eps"]:g}_{f["loss"]}'
