"""Checks a config before anything loads or compiles; errors name the field and the valid values."""

import math

from robust_jax import errors

from robust_jax import attacks
from robust_jax import data as data_lib
from robust_jax import defenses
from robust_jax import model_fns
from robust_jax import models
from robust_jax import run_io
from robust_jax import suites
from robust_jax.data import extra as extra_data
from robust_jax.eval import certify
from robust_jax.training import monitor
from robust_jax.training import optim


def _positive_int(value, field, allow_zero=False):
  ok = isinstance(value, int) and not isinstance(value, bool) and (
      value >= 0 if allow_zero else value >= 1)
  if not ok:
    raise errors.ConfigError(f'{field}={value!r} must be an integer >= {0 if allow_zero else 1}.')


def _number(value, field, low=None, low_open=False):
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
    raise errors.ConfigError(f'{field}={value!r} must be a finite number.')
  if low is not None and (value <= low if low_open else value < low):
    raise errors.ConfigError(f'{field}={value!r} must be {">" if low_open else ">="} {low}.')


def _normalization(config):
  """model.mean / model.std: both empty (the dataset's), or one value per channel (or one for
  all), std > 0, and only where the network normalises its input."""
  for field in ('mean', 'std'):
    if not isinstance(config.model.get(field, ()), (tuple, list)):
      raise errors.ConfigError(f'model.{field}={config.model[field]!r} must be a tuple of numbers, '
                               f'e.g. --config.model.{field}="(0.5, 0.5, 0.5)", or () for the '
                               "dataset's constants.")
  mean, std = tuple(config.model.get('mean', ())), tuple(config.model.get('std', ()))
  if not mean and not std:
    return
  channels = data_lib.DATASETS[config.data.name]['shape'][-1]
  for field, values in (('mean', mean), ('std', std)):
    if len(values) not in (1, channels) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
      raise errors.ConfigError(
          f'model.{field}={values!r} must be {channels} numbers (one per channel of '
          f'{config.data.name}) or one for all, e.g. --config.model.{field}="(0.5, 0.5, 0.5)"; '
          'set both model.mean and model.std, or neither for the dataset\'s constants.')
  if min(std) <= 0:
    raise errors.ConfigError(f'model.std={std!r} must be > 0 in every channel.')
  if not config.model.get('normalize', True):
    raise errors.ConfigError('model.mean/model.std are set but model.normalize=False feeds the '
                             '[0,1] pixels unnormalised; drop one of the two.')


def validate(config, num_devices=1):
  """Raises ConfigError (a ValueError) on the first problem found; returns the defense, built
  once (defenses.Resolved), for the run to pass on."""
  _data_and_model(config)
  defenses.check_name(config)
  _sizes(config, num_devices)
  _optim(config.optim)
  # The training attack's fields the defense cannot honour, the defense's own fields
  # (defense.beta, ...); a transfer train_attack loads its surrogate.
  defense = defenses.resolve(config, run_io.load_model)
  monitor.validate(config)  # train.monitor_examples, co_action, co_drop, monitor_attack
  _evaluation(config, num_devices)
  _positive_int(config.benchmark.batch_size, 'benchmark.batch_size')
  _positive_int(config.benchmark.repeats, 'benchmark.repeats')
  return defense


def _data_and_model(config):
  if config.data.name not in data_lib.DATASETS:
    raise errors.ConfigError(f'data.name={config.data.name!r}; valid: {sorted(data_lib.DATASETS)}.')
  if config.data.get('train_read', 'auto') not in data_lib.READ_MODES:
    raise errors.ConfigError(f'data.train_read={config.data.train_read!r}; valid: '
                             f'{list(data_lib.READ_MODES)}.')
  extra_data.check_config(config.data.get('extra'), config.train.batch_size)
  if config.model.name not in models.MODELS:
    raise errors.ConfigError(f'model.name={config.model.name!r}; valid: {sorted(models.MODELS)}.')
  if config.model.name in ('wide_resnet', 'dm_wide_resnet') and (config.model.depth - 4) % 6:
    raise errors.ConfigError(f'model.depth={config.model.depth} must be 6n+4 (e.g. 28, 34, 70).')
  if config.model.get('activation', 'swish') not in ('relu', 'swish'):
    raise errors.ConfigError(f'model.activation={config.model.activation!r}; valid: relu, swish '
                             '(dm_wide_resnet).')
  base_width = config.model.get('base_width', 64)
  if not isinstance(base_width, int) or isinstance(base_width, bool) or base_width < 1:
    raise errors.ConfigError(f'model.base_width={base_width!r} must be a positive integer '
                             '(preact_resnet18: 64 as published, 16 for the quarter width).')
  if config.model.attack_bn_mode not in model_fns.BN_MODES:
    raise errors.ConfigError(f'model.attack_bn_mode={config.model.attack_bn_mode!r}; '
                     f'valid: {list(model_fns.BN_MODES)}.')
  if config.model.get('dtype', 'float32') not in models.DTYPES:
    raise errors.ConfigError(f'model.dtype={config.model.dtype!r}; valid: {list(models.DTYPES)}.')
  for field in ('fast_ops', 'normalize'):
    if not isinstance(config.model.get(field, True), bool):
      raise errors.ConfigError(f'model.{field}={config.model[field]!r} must be True or False.')
  _normalization(config)


def _sizes(config, num_devices):
  """Seed, steps, epochs, checkpoint and batch sizes (divisible by the devices)."""
  _positive_int(config.seed, 'seed', allow_zero=True)
  for field in ('batch_size', 'log_every_steps'):
    _positive_int(config.train[field], f'train.{field}')
  _positive_int(config.train.steps, 'train.steps', allow_zero=True)
  _positive_int(config.train.epochs, 'train.epochs', allow_zero=config.train.steps > 0)
  _positive_int(config.checkpoint.every_steps, 'checkpoint.every_steps')
  _positive_int(config.checkpoint.max_to_keep, 'checkpoint.max_to_keep')
  _positive_int(config.eval.batch_size, 'eval.batch_size')
  _positive_int(config.eval.num_examples, 'eval.num_examples', allow_zero=True)
  for field, size in (('train.batch_size', config.train.batch_size),
                      ('eval.batch_size', config.eval.batch_size)):
    if size % num_devices:
      raise errors.ConfigError(f'{field}={size} is not divisible by the {num_devices} devices; '
                       f'use a multiple of {num_devices}.')


def _optim(o):
  if o.name not in optim.OPTIMIZERS:
    raise errors.ConfigError(f'optim.name={o.name!r}; valid: {list(optim.OPTIMIZERS)}.')
  if o.schedule not in optim.SCHEDULES:
    raise errors.ConfigError(f'optim.schedule={o.schedule!r}; valid: {list(optim.SCHEDULES)}.')
  _number(o.learning_rate, 'optim.learning_rate', 0, low_open=True)
  _number(o.weight_decay, 'optim.weight_decay', 0)
  _number(o.momentum, 'optim.momentum', 0)
  _number(o.warmup_epochs, 'optim.warmup_epochs', 0)
  _number(o.grad_clip_norm, 'optim.grad_clip_norm', 0)
  _number(o.ema_decay, 'optim.ema_decay', 0)
  if o.ema_decay >= 1:
    raise errors.ConfigError(f'optim.ema_decay={o.ema_decay} must be < 1 (0 disables EMA).')


def _evaluation(config, num_devices):
  """The attacks and the suite of `config.eval`, sanity checks, certification."""
  if not config.eval.attacks:
    raise errors.ConfigError(
        'eval.attacks is empty; name at least one attack (e.g. the default pgd20).')
  for name, cfg in config.eval.attacks.items():
    attacks.validate(cfg, f'eval.attacks.{name}')
  attacks.validate(config.benchmark.attack, 'benchmark.attack')
  if config.eval.suite:
    for name, cfg in suites.attacks(config.eval.suite, norm=config.eval.suite_norm,
                                    eps=config.eval.suite_eps):
      attacks.validate(cfg, f'eval.suite ({config.eval.suite}/{name})')
  _positive_int(config.eval.sanity_examples, 'eval.sanity_examples')
  certify.validate(config, num_devices)
