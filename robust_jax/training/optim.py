"""Optimisers and learning-rate schedules from `config.optim` (plain values)."""

import optax

from robust_jax import errors

OPTIMIZERS = ('adam', 'sgd')
SCHEDULES = ('constant', 'piecewise', 'cosine', 'cyclic')


def make_schedule(cfg, total_steps, steps_per_epoch):
  """Learning rate as a function of the step, over `total_steps` steps."""
  lr = cfg.learning_rate
  warmup = int(cfg.warmup_epochs * steps_per_epoch)
  if cfg.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif cfg.schedule == 'piecewise':
    bounds = {int(f * total_steps): cfg.piecewise_scale for f in cfg.piecewise_boundaries}
    main = optax.piecewise_constant_schedule(lr, {b - warmup: s for b, s in bounds.items()})
  elif cfg.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(1, total_steps - warmup))
  elif cfg.schedule == 'cyclic':  # Wong et al. 2020: 0 -> lr at cyclic_peak -> 0.
    peak = max(1, int(cfg.cyclic_peak * total_steps))
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, peak),
         optax.linear_schedule(lr, 0.0, max(1, total_steps - peak))], [peak])
  else:
    raise errors.ConfigError(f'optim.schedule={cfg.schedule!r}; valid: {list(SCHEDULES)}.')
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg, total_steps, steps_per_epoch):
  """Returns (optax transformation, schedule)."""
  schedule = make_schedule(cfg, total_steps, steps_per_epoch)
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.name == 'adam':
    parts.append(optax.adamw(schedule, weight_decay=cfg.weight_decay) if cfg.weight_decay > 0
                 else optax.adam(schedule))
  elif cfg.name == 'sgd':
    if cfg.weight_decay > 0:  # PyTorch-style L2 on the gradient.
      parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  else:
    raise errors.ConfigError(f'optim.name={cfg.name!r}; valid: {list(OPTIMIZERS)}.')
  return optax.chain(*parts), schedule
