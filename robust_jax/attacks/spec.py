"""Attack configs: a registry of attacks, validation, construction and canonical names.

An attack config holds plain values: `name` plus the attack's fields (see `ATTACKS[name]`), e.g.
`dict(name='pgd', norm='linf', eps=0.1, steps=40, step_size=0.01, restarts=2)`. Missing fields
take the attack's defaults; an unknown field or value is an error naming it and the valid ones.
"""

import math

import jax
import numpy as np

from robust_jax import errors
from robust_jax.attacks import apgd
from robust_jax.attacks import cw
from robust_jax.attacks import deepfool
from robust_jax.attacks import fab
from robust_jax.attacks import objectives
from robust_jax.attacks import pgd
from robust_jax.attacks import square
from robust_jax.attacks import threat
from robust_jax.attacks import transfer

_PGD = dict(norm='linf', eps=0.0, steps=1, step_size=None, restarts=1, random_start=True,
            loss='ce', track_best=True)


def default_step_size(f):
  """The step of a 'pgd'/'fgsm' field dict `f` whose step_size is unset: FGSM steps the whole
  radius; PGD defaults to 2.5 eps / steps (Madry et al.)."""
  return f['eps'] if f['name'] == 'fgsm' else 2.5 * f['eps'] / f['steps']


def _make_pgd(f):
  step = f['step_size']
  if step is None:
    step = default_step_size(f)
  return pgd.make_pgd(norm=f['norm'], eps=f['eps'], steps=f['steps'], step_size=float(step),
                      restarts=f['restarts'], random_start=bool(f['random_start']),
                      loss=f['loss'], track_best=bool(f['track_best']))


def _kwargs(f):
  return {k: v for k, v in f.items() if k != 'name'}


# name -> (defaults, valid norms, valid losses or None, factory(fields) -> attack).
# A field in RUN_FIELDS[name] names a trained run's workdir; `build` passes the factory the run
# loaded by its `load_model` instead.
ATTACKS = {
    'fgsm': (dict(_PGD, random_start=False), threat.NORMS, tuple(objectives.LOSSES), _make_pgd),
    'pgd': (_PGD, threat.NORMS, tuple(objectives.LOSSES), _make_pgd),
    'apgd_ce': (apgd.DEFAULTS['apgd_ce'], threat.NORMS, tuple(apgd.LOSSES),
                lambda f: apgd.make_apgd(**_kwargs(f))),
    'apgd_t': (apgd.DEFAULTS['apgd_t'], threat.NORMS, None,
               lambda f: apgd.make_apgd_targeted(**_kwargs(f))),
    'fab_t': (fab.DEFAULTS['fab_t'], fab.NORMS, None,
              lambda f: fab.make_fab_targeted(**_kwargs(f))),
    'square': (square.DEFAULTS['square'], threat.NORMS, None,
               lambda f: square.make_square(**_kwargs(f))),
    'transfer': (transfer.DEFAULTS, threat.NORMS, tuple(objectives.LOSSES),
                 lambda f: transfer.make_transfer(**_kwargs(f))),
    'cw_l2': (cw.DEFAULTS, ('l2',), None, lambda f: cw.make_cw_l2(**_kwargs(f))),
    'deepfool': (deepfool.DEFAULTS, threat.NORMS, None,
                 lambda f: deepfool.make_deepfool(**_kwargs(f))),
}

RUN_FIELDS = {'transfer': transfer.RUN_FIELDS}

# Attacks that can also run in stages (attacks/stages.py), so an evaluation drops the examples
# already fooled between targets or blocks of queries: factory(fields) -> Staged, or None for the
# settings that cannot (Square with restarts > 1: its restarts run side by side).
STAGED = {
    'apgd_t': lambda f: apgd.make_apgd_staged(**_kwargs(f)),
    'fab_t': lambda f: fab.make_fab_staged(**_kwargs(f)),
    'square': lambda f: (square.make_square_staged(**{k: v for k, v in _kwargs(f).items()
                                                      if k != 'restarts'})
                         if f['restarts'] == 1 else None),
}

# Fields every attack takes; used by the evaluation, not passed to the attack's factory.
# eot_samples > 1: attack a randomised model through EOT with that many draws per step.
# bpda: attack an input-transformation model through its transformation's differentiable
# approximation (BPDA; the forward pass is unchanged). Both are no-ops on other models.
# detector_penalty c > 0: attack a detector-guarded model (robust_jax/defenses/squeezing.py) with
# the detector-aware loss, c * relu(score - threshold) added to the true-class logit; a no-op
# elsewhere.
GENERIC = dict(eot_samples=1, bpda=False, detector_penalty=0.0)
_INTEGERS = ('steps', 'restarts', 'num_targets', 'search_steps', 'num_candidates', 'eot_samples')
_POSITIVE = ('step_size', 'learning_rate', 'initial_c', 'p_init', 'rho', 'eta', 'beta')
_NON_NEGATIVE = ('overshoot', 'kappa', 'alpha_max', 'detector_penalty')
_BOOLEANS = ('random_start', 'track_best', 'seed_start', 'bpda')


def register(name, defaults, norms, losses, factory, run_fields=()):
  """Adds an attack: `factory(fields: dict) -> attack(logits_fn, x, y, key)`.

  `run_fields`: fields that name a trained run's workdir; the factory gets the loaded run.
  """
  ATTACKS[name] = (dict(defaults), tuple(norms), None if losses is None else tuple(losses),
                   factory)
  RUN_FIELDS.pop(name, None)
  STAGED.pop(name, None)
  if run_fields:
    RUN_FIELDS[name] = tuple(run_fields)


def _is_number(v):
  return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def validate(cfg, where='attack'):
  """Returns the attack's full field dict; raises ConfigError naming `where.field`."""
  cfg = dict(cfg)
  name = cfg.get('name')
  if name not in ATTACKS:
    raise errors.ConfigError(f'{where}.name={name!r} is not an attack; valid: {sorted(ATTACKS)}.')
  defaults, norms, losses, _ = ATTACKS[name]
  unknown = set(cfg) - set(defaults) - set(GENERIC) - {'name'}
  if unknown:
    raise errors.ConfigError(f'{where}: unknown field(s) {sorted(unknown)} for attack {name!r}; '
                             f'valid: {sorted(set(defaults) | set(GENERIC))}.')
  f = {**GENERIC, **defaults, **cfg}
  if f['norm'] not in norms:
    raise errors.ConfigError(f'{where}.norm={f["norm"]!r}; {name} supports {list(norms)}.')
  if losses is not None and f.get('loss') not in losses:
    raise errors.ConfigError(f'{where}.loss={f.get("loss")!r}; valid: {sorted(losses)}.')
  if not _is_number(f['eps']) or f['eps'] < 0:
    raise errors.ConfigError(
        f'{where}.eps={f["eps"]!r} must be a number >= 0 (pixel scale [0,1]; inf = unbounded).')
  for field in _INTEGERS:
    v = f.get(field, 1)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise errors.ConfigError(f'{where}.{field}={v!r} must be an integer >= 1.')
  for field in _POSITIVE + _NON_NEGATIVE:
    v = f.get(field, 1.0)
    if v is None and field == 'step_size':
      continue
    if not _is_number(v) or not math.isfinite(v) or (v <= 0 if field in _POSITIVE else v < 0):
      raise errors.ConfigError(f'{where}.{field}={v!r} must be a finite number '
                               f'{"> 0" if field in _POSITIVE else ">= 0"}.')
  for field in _BOOLEANS:
    if not isinstance(f.get(field, True), bool):
      raise errors.ConfigError(f'{where}.{field}={f[field]!r} must be True or False.')
  if name == 'transfer' and not (isinstance(f['surrogate'], str) and f['surrogate']):
    raise errors.ConfigError(f'{where}.surrogate must be the workdir of a trained model.')
  if name == 'fgsm' and f['steps'] != 1:
    raise errors.ConfigError(
        f'{where}.steps={f["steps"]} but FGSM takes exactly 1 step; use name=pgd.')
  return f


def check_inputs(x, y, name='attack'):
  """ValueError, before anything compiles, for inputs an attack cannot take.

  x must be f[B,H,W,C] with values in [0,1]; y int[B] with non-negative labels. Arrays being
  traced (inside jit) are checked for shapes and dtypes only.
  """
  if getattr(x, 'ndim', None) != 4:
    raise ValueError(f'{name}: images must be f[B,H,W,C]; got shape {getattr(x, "shape", None)}.')
  if getattr(y, 'shape', None) != (x.shape[0],):
    raise ValueError(f'{name}: labels must be int[B] with B={x.shape[0]} (the images\' batch); '
                     f'got shape {getattr(y, "shape", None)}.')
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'{name}: labels must be integers (class indices); got {y.dtype}.')
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f'{name}: images must be floats in [0,1]; got {x.dtype} (divide uint8 '
                     'images by 255).')
  if isinstance(x, jax.core.Tracer) or isinstance(y, jax.core.Tracer):
    return
  lo, hi = float(np.min(x)), float(np.max(x))
  if lo < 0 or hi > 1 or not np.isfinite(lo + hi):
    raise ValueError(f'{name}: images must lie in [0,1] (pixel scale; eps is measured there); '
                     f'got values in [{lo:g}, {hi:g}].')
  if int(np.min(y)) < 0:
    raise ValueError(f'{name}: labels must be >= 0; got {int(np.min(y))}.')


def _load_runs(fields, name, where, load_model):
  """`fields` with each workdir field of attack `name` replaced by the run `load_model` loads."""
  for field in RUN_FIELDS.get(name, ()):
    if load_model is None:
      raise ValueError(f'{where} {name}: {where}.{field}={fields[field]!r} is a trained run to '
                       'load; build the attack with load_model=robust_jax.run_io.load_model (the '
                       'evaluation and training pass it).')
    fields[field] = load_model(fields[field])
  return fields


def build(cfg, where='attack', load_model=None):
  """Returns `attack(logits_fn, x, y, key) -> x_adv` for a validated attack config.

  Concrete inputs are checked first (`check_inputs`); labels beyond the model's classes are
  caught once the logits' width is known (abstract evaluation, before compiling).
  `load_model`: `workdir -> run_io.Run`, for attacks that use another trained model (the transfer
  attack's surrogate); the callers that run attacks pass robust_jax.run_io.load_model.
  """
  f = validate(cfg, where)
  f['eps'] = float(f['eps'])
  fields = _load_runs({k: v for k, v in f.items() if k not in GENERIC}, f['name'], where,
                      load_model)
  attack = ATTACKS[f['name']][3](fields)

  def checked(logits_fn, x, y, key):
    check_inputs(x, y, f'{where} {f["name"]}')
    if not isinstance(y, jax.core.Tracer):
      try:
        out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f'{where} {f["name"]}: the model cannot take images of shape '
                         f'{tuple(x.shape)}: {type(e).__name__}: {str(e)[:300]}') from e
      k = out[-1] if len(out) == 2 else None  # (a black-box target may be a stand-in)
      if k is not None and int(np.max(y)) >= k:
        raise ValueError(f'{where} {f["name"]}: label {int(np.max(y))} is outside the model\'s '
                         f'{k} classes [0, {k}).')
    return attack(logits_fn, x, y, key)

  return checked


def build_staged(cfg, where='attack'):
  """The attack of a config as a `stages.Staged`, or None when it does not run in stages.

  Same fields and validation as `build`; the stages together give the attack `build` returns
  (`stages.as_attack`), and an evaluation may run each stage on only the examples not yet `done`.
  """
  f = validate(cfg, where)
  if f['name'] not in STAGED:
    return None
  f['eps'] = float(f['eps'])
  return STAGED[f['name']]({k: v for k, v in f.items() if k not in GENERIC})


def describe(cfg):
  """The attack's spec as a metric name: 'pgd40x2_linf_0.1_ce', 'apgd_t-100_linf_0.1'."""
  name = dict(cfg)['name']
  f = {**ATTACKS[name][0], **dict(cfg)} if name in ATTACKS else dict(cfg)
  steps = '' if name == 'fgsm' else str(f.get('steps', ''))
  restarts = f'x{f["restarts"]}' if f.get('restarts', 1) > 1 else ''
  rs = '_rs' if name == 'fgsm' and f.get('random_start') else ''
  loss = f'_{f["loss"]}' if 'loss' in f else ''
  sep = '' if name in ('pgd', 'fgsm') else '-'
  adaptive = ('_bpda' if f.get('bpda') else '') + (
      f'_eot{f["eot_samples"]}' if f.get('eot_samples', 1) > 1 else '')
  return f'{name}{sep}{steps}{restarts}{rs}_{f["norm"]}_{f["eps"]:g}{loss}{adaptive}'
