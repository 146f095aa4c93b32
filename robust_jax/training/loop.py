"""The resumable training loop: steps, checkpoints, metrics and the overfitting monitor.

    result = loop.fit(config, workdir, dataset, model, mesh)   # FitResult(state, monitor, ...)

`fit` builds the optimizer (optim.py) and the step (step.py), restores the latest checkpoint
(checkpoint.py: the state, free AT's carry), then runs the steps, logging metrics (metrics.py)
and checkpointing; with `train.monitor_examples` > 0 the catastrophic-overfitting monitor
(monitor.py) checks every epoch. Running the same command again resumes bitwise.
"""

from typing import NamedTuple

import jax
from absl import logging

from robust_jax import data as data_lib
from robust_jax import defenses as defense_lib
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax.defenses import free_at
from robust_jax.training import checkpoint
from robust_jax.training import metrics as metrics_lib
from robust_jax.training import monitor as monitor_lib
from robust_jax.training import optim
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib


def _host_batch(dataset, config, step, host_rows, num_train):
  return data_lib.host_batch(dataset, config.seed, step, config.train.batch_size, host_rows,
                             num_train)


def num_train_steps(config, num_examples, replays=None):
  """Training steps (minibatches) of a run on a training set of `num_examples` images.

  The monitor's held-out images do not count; free AT's epochs are divided by its `replays`
  (the resolved defense's facet; None: read from the config).
  """
  if config.train.steps > 0:
    return config.train.steps
  n = num_examples - monitor_lib.held_out(config, num_examples)
  spe = data_lib.steps_per_epoch(n, config.train.batch_size)
  if replays is None:  # read, not built: evaluation-only defenses build no step
    replays = defense_lib.facets(config).replays
  if replays != 1:
    return free_at.num_steps(config.train.epochs, spe, replays)
  return config.train.epochs * spe


class FitResult(NamedTuple):
  """What `fit` returns: the final replicated TrainState and the monitor's record.

  `monitor` is None without the catastrophic-overfitting monitor, else the content of
  WORKDIR/monitor.json: history, best, collapses, `stopped_at` (the step where training stopped
  early, or None) and `rolled_back_to` (the step of the weights `state` holds after a rollback).
  `best_state`: with `train.co_action='best'`, the state of the best monitored epoch.
  """
  state: state_lib.TrainState
  monitor: dict | None
  best_state: state_lib.TrainState | None = None


def _monitor(mon, state, records):
  """Runs the monitor on `state` (records checked first); returns (state, stop, rolled_back_to).

  Adds the monitor's metrics to the last record; on a collapse with co_action 'rollback',
  `state` becomes the best epoch's.
  """
  step, record = records[-1]
  extra, stop = mon.check(step, record['epoch'], state)
  record.update(extra)
  if not (stop and mon.action == 'rollback'):
    return state, stop, None
  best = mon.best_state(state)
  if best is None:
    logging.warning('No saved weights of the best step %d; stopping without rollback.',
                    mon.record['best']['step'])
    return state, stop, None
  rolled_back_to = int(jax.device_get(best.step))
  record['rolled_back_to_step'] = rolled_back_to
  logging.warning('Rolled back to the weights of step %d.', rolled_back_to)
  return best, stop, rolled_back_to


class _Plan(NamedTuple):
  """What the config and the data make of a run: its defense, optimizer and length."""
  defense: defense_lib.Defense
  tx: object
  schedule: object
  total: int            # training steps (minibatches)
  spe: int              # steps per epoch
  num_train: int        # training images sampled (the monitor's held-out ones excluded)
  monitored: bool


def _plan(config, dataset, resolved):
  defense = resolved.objective
  n_all = len(dataset.train_labels)
  n = n_all - monitor_lib.held_out(config, n_all)
  spe = data_lib.steps_per_epoch(n, config.train.batch_size)
  total, r = num_train_steps(config, n_all, resolved.facets.replays), defense.replays
  tx, schedule = optim.make_optimizer(config.optim, total * r, spe * r)
  return _Plan(defense, tx, schedule, total, spe, n, n < n_all)


def _restore_or_init(config, ckpt, plan, model, image_shape, mesh):
  """The state of the latest checkpoint (free AT's carry included), or the initial one."""
  state = state_lib.init_state(model, plan.tx, rng.root_key(config.seed, rng.INIT), image_shape,
                               config.optim.ema_decay,
                               step_lib.carry_shape(plan.defense, config, image_shape))
  state = parallel.replicate(state, mesh)
  items, _ = ckpt.resume(state_lib.to_items(state))
  return state_lib.from_items(state, items) if items else state


def _run_steps(config, workdir, dataset, mesh, plan, step_fn, state, ckpt, mon, progress):
  """Trains from `state.step` to the end (or a stop); returns (state, done, stop, rolled_back_to).

  Checkpoints every `checkpoint.every_steps` steps (not the last: `fit` saves it), logs every
  `train.log_every_steps` steps and runs the monitor (if any) at the end of every epoch.
  """
  start = done = int(jax.device_get(state.step))
  out = metrics_lib.StepLog(workdir, start, plan.total, plan.spe, plan.schedule,
                            plan.defense.replays, progress)
  host_rows = data_lib.host_slice(config.train.batch_size, jax.process_index(),
                                  jax.process_count())
  stop, rolled_back_to = False, None
  try:
    for step in range(start, plan.total):
      batch = parallel.shard_batch(_host_batch(dataset, config, step, host_rows, plan.num_train),
                                   mesh)
      state, m = step_fn(state, batch, rng.step_key(config.seed, step))
      done = step + 1
      out.add(done, m)
      if mon is not None and (done % plan.spe == 0 or done == plan.total):
        records = out.records()
        state, stop, rolled_back_to = _monitor(mon, state, records)
        out.write(records)
      elif done % config.train.log_every_steps == 0:
        out.flush()
      if stop:
        break
      if done % config.checkpoint.every_steps == 0 and done < plan.total:
        out.flush()  # never checkpoint a state whose metrics were not checked
        ckpt.save(done, **state_lib.to_items(state))
    out.flush()
  finally:
    out.close()
  return state, done, stop, rolled_back_to


def fit(config, workdir, dataset, model, mesh, progress=True, load_model=run_io.load_model,
        defense=None):
  """Trains (or resumes) `model` on `dataset`; returns a FitResult.

  Checkpoints every `config.checkpoint.every_steps` steps and at the end; metrics go to
  `metrics.jsonl` and TensorBoard every `config.train.log_every_steps` steps, and with
  `train.monitor_examples` > 0 the catastrophic-overfitting monitor runs every epoch
  (training/monitor.py). `load_model` (workdir -> run_io.Run) loads the other trained runs the
  defense uses (a distillation teacher, ensemble AT's static models, a transfer train_attack's
  surrogate). `defense`: the run's defenses.Resolved (validation.validate's), built here from
  the config when None.
  """
  if defense is None:
    defense = defense_lib.resolve(config, load_model)
  plan = _plan(config, dataset, defense)
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint.max_to_keep)
  try:
    state = _restore_or_init(config, ckpt, plan, model, dataset.train_images.shape[1:], mesh)
    mon = None
    if plan.monitored:
      mon = monitor_lib.Monitor(config, workdir, model, mesh, dataset, ckpt,
                                ckpt.latest_step() or 0, attack=defense.monitor_attack)
      if mon.stopped():
        logging.warning('%s: training stopped at step %d (co_action=%s; see monitor.json); not '
                        'training further.', workdir, mon.record['stopped_at'], mon.action)
        return FitResult(state, mon.record)
    step_fn = step_lib.make_train_step(model, plan.tx, plan.defense, config, mesh,
                                       steps_per_epoch=plan.spe, load_model=load_model)
    state, done, stop, rolled_back_to = _run_steps(config, workdir, dataset, mesh, plan, step_fn,
                                                   state, ckpt, mon, progress)
    if ckpt.latest_step() != done:
      ckpt.save(done, **state_lib.to_items(state))
    if stop:  # after the save (synchronous): the weights it ended with are on disk
      mon.finish(done, rolled_back_to)
    best = None
    if mon is not None and mon.action == 'best' and mon.record['best'] is not None:
      best = mon.best_state(state)
    return FitResult(state, None if mon is None else mon.record, best)
  finally:
    ckpt.close()
