"""Training: `make_train_step` (pure, data-parallel) and the resumable training loop.

    step_fn = make_train_step(model, tx, defense, config, mesh)
    state, metrics = step_fn(state, batch, step_key)

The step runs per device under `shard_map` over the 'data' axis: each device attacks and
differentiates its shard; gradients and BatchNorm statistics are averaged with `lax.pmean`.
Defenses that change the step itself (see robust_jax/defenses/__init__.py) plug in here: free AT
replays each batch (`free_at.run_replays`, its carried perturbation in FreeTrainState.carry),
AWP takes the gradient at perturbed weights, and distillation and ensemble AT get the weights of
their fixed models (teacher, static models) as an argument of the jitted step.

    result = fit(config, workdir, dataset, model, mesh)   # FitResult(state, monitor)

`fit` runs the steps, checkpoints and logs (train_io.py), and the catastrophic-overfitting monitor
(monitor.py) when `train.monitor_examples` > 0.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from absl import logging
from jax.sharding import PartitionSpec as P

from robust_jax import data as data_lib
from robust_jax import defenses as defense_lib
from robust_jax import model_fns
from robust_jax import monitor as monitor_lib
from robust_jax import optim
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax import train_io
from robust_jax import train_state
from robust_jax.defenses import free_at


# The state lives in train_state.py (loading a run needs it, not the loop); kept here too.
TrainState = train_state.TrainState
FreeTrainState = train_state.FreeTrainState
init_state = train_state.init_state


def carry_shape(defense, config, image_shape):
  """The shape of the carried perturbation `defense` needs (free AT), or None."""
  if defense.replay_update is None:
    return None
  return (config.train.batch_size,) + tuple(image_shape)


def make_train_step(model, tx, defense, config, mesh, steps_per_epoch=1,
                    load_model=run_io.load_model):
  """Returns `step(state, batch, key) -> (state, metrics)`, jitted, donating `state`.

  `batch`: {'image': uint8[B,H,W,C], 'label': int32[B]} sharded over 'data'; `key`: the step's
  PRNG key. Metrics are global sums (`loss_sum`, `correct`, `count`; over all replays for free
  AT) plus `grad_norm` and `lr`. `steps_per_epoch` turns the step into the epoch that
  epoch-based defense schedules see (AWP's warm-up). Models the defense needs besides the one
  trained (`defense.load`) are loaded here, once, with `load_model` (workdir -> run_io.Run), and
  passed to every step as arguments.
  """
  ema_decay = config.optim.ema_decay
  bn_mode = config.model.attack_bn_mode
  random_crop, random_flip = config.data.random_crop, config.data.random_flip
  frozen, bind = ({}, None) if defense.load is None else defense.load(load_model)
  frozen = parallel.replicate(frozen, mesh)

  def apply_grads(state, grads, new_stats):
    grads = jax.lax.pmean(grads, parallel.AXIS)
    new_stats = jax.lax.pmean(new_stats, parallel.AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    state = state.replace(params=params, batch_stats=new_stats, opt_state=opt_state,
                          ema_params=ema)
    return state, optax.tree.norm(grads)

  def per_device(state, images, labels, key, frozen):
    local_b = images.shape[0]
    pos = parallel.global_positions(local_b)
    x = images.astype(jnp.float32) / 255.0
    x = data_lib.augment(x, rng.example_keys(key, rng.AUGMENT, pos), random_crop=random_crop,
                random_flip=random_flip)
    perturb, loss = (defense.perturb, defense.loss) if bind is None else bind(frozen, key)
    attack_logits = model_fns.logits_fn(model, state.params, state.batch_stats, bn_mode)
    dropout_key = jax.random.fold_in(jax.random.fold_in(key, rng.DROPOUT),
                                     jax.lax.axis_index(parallel.AXIS))
    onehot = jax.nn.one_hot(labels, jax.eval_shape(attack_logits, x[:1]).shape[-1])

    def loss_fn(params, batch_stats, x_adv, dkey):
      def forward(v):
        return model_fns.forward_train(model, params, batch_stats, v, dkey)
      per_example, logits, new_stats = loss(forward, x, x_adv, onehot)
      return jnp.mean(per_example), (per_example, logits, new_stats)

    if defense.replay_update is None:
      x_adv = jax.lax.stop_gradient(
          perturb(attack_logits, x, labels, rng.example_keys(key, rng.ATTACK, pos)))
      grad_fn = jax.grad(loss_fn, has_aux=True)
      at = state.params
      if defense.weight_perturb is not None:  # AWP: the gradient at params + v
        proxy, _ = grad_fn(state.params, state.batch_stats, x_adv,
                           jax.random.fold_in(dropout_key, rng.DROPOUT_PROXY))
        v = defense.weight_perturb(state.params, jax.lax.pmean(proxy, parallel.AXIS),
                                   state.step / steps_per_epoch)
        at = jax.tree.map(jnp.add, state.params, v)
      grads, (per_example, logits, new_stats) = grad_fn(at, state.batch_stats, x_adv,
                                                        dropout_key)
      state, grad_norm = apply_grads(state, grads, new_stats)
    else:  # free AT: per_example f32[m,b], logits f32[m,b,K] over the m replays
      state, per_example, logits, grad_norm = free_at.run_replays(
          state, x, replays=defense.replays, update=defense.replay_update, objective=loss_fn,
          apply_grads=apply_grads, dropout_key=dropout_key, axis=parallel.AXIS)
    metrics = {
        'loss_sum': jax.lax.psum(jnp.sum(per_example), parallel.AXIS),
        'correct': jax.lax.psum(jnp.sum(jnp.argmax(logits, -1) == labels), parallel.AXIS),
        'count': jax.lax.psum(jnp.int32(per_example.size), parallel.AXIS),
        'grad_norm': grad_norm,
    }
    return state.replace(step=state.step + 1), metrics

  mapped = parallel.per_device(per_device, mesh,
                               in_specs=(P(), P('data'), P('data'), P(), P()),
                               out_specs=(P(), P()))
  jitted = jax.jit(mapped, donate_argnums=0)

  def step(state, batch, key):
    return jitted(state, batch['image'], batch['label'], key, frozen)

  return step


def _host_batch(dataset, config, step, host_rows, num_train):
  return data_lib.host_batch(dataset, config.seed, step, config.train.batch_size, host_rows,
                             num_train)


def num_train_steps(config, num_examples):
  """Training steps (minibatches) of a run on a training set of `num_examples` images.

  The monitor's held-out images do not count; free AT's epochs are divided by its replays.
  """
  if config.train.steps > 0:
    return config.train.steps
  n = num_examples - monitor_lib.held_out(config, num_examples)
  spe = data_lib.steps_per_epoch(n, config.train.batch_size)
  if config.defense.name == 'free_at':  # read, not built: evaluation-only defenses build no step
    return free_at.num_steps(config.train.epochs, spe, config.defense.replays)
  return config.train.epochs * spe


class FitResult(NamedTuple):
  """What `fit` returns: the final replicated TrainState and the monitor's record.

  `monitor` is None without the catastrophic-overfitting monitor, else the content of
  WORKDIR/monitor.json: history, best, collapses, `stopped_at` (the step where training stopped
  early, or None) and `rolled_back_to` (the step of the weights `state` holds after a rollback).
  `best_state`: with `train.co_action='best'`, the state of the best monitored epoch.
  """
  state: TrainState
  monitor: dict | None
  best_state: TrainState | None = None


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


def fit(config, workdir, dataset, model, mesh, progress=True, load_model=run_io.load_model):
  """Trains (or resumes) `model` on `dataset`; returns a FitResult.

  Checkpoints every `config.checkpoint.every_steps` steps and at the end; metrics go to
  `metrics.jsonl` and TensorBoard every `config.train.log_every_steps` steps, and with
  `train.monitor_examples` > 0 the catastrophic-overfitting monitor runs every epoch
  (robust_jax/monitor.py). `load_model` (workdir -> run_io.Run) loads the other trained runs the
  defense uses (a distillation teacher, ensemble AT's static models, a transfer train_attack's
  surrogate).
  """
  defense = defense_lib.build(config, load_model)
  n_all = len(dataset.train_labels)
  n = n_all - monitor_lib.held_out(config, n_all)
  spe = data_lib.steps_per_epoch(n, config.train.batch_size)
  total, r = num_train_steps(config, n_all), defense.replays
  tx, schedule = optim.make_optimizer(config.optim, total * r, spe * r)
  image_shape = dataset.train_images.shape[1:]
  state = init_state(model, tx, rng.root_key(config.seed, rng.INIT), image_shape,
                     config.optim.ema_decay, carry_shape(defense, config, image_shape))
  ckpt = train_io.Saver(workdir, config, defense.replay_update is not None)
  state = ckpt.restore_or_init(parallel.replicate(state, mesh))
  mon = None
  if n < n_all:
    mon = monitor_lib.Monitor(config, workdir, model, mesh, dataset, ckpt.latest_step() or 0)
    if mon.stopped():
      logging.warning('%s: training stopped at step %d (co_action=%s; see monitor.json); not '
                      'training further.', workdir, mon.record['stopped_at'], mon.action)
      mon.close()
      ckpt.close()
      return FitResult(state, mon.record)
  start = done = int(jax.device_get(state.step))
  out = train_io.StepLog(workdir, start, total, spe, schedule, r, progress)
  step_fn = make_train_step(model, tx, defense, config, mesh, steps_per_epoch=spe,
                            load_model=load_model)
  host_rows = data_lib.host_slice(config.train.batch_size, jax.process_index(),
                                  jax.process_count())
  stop, rolled_back_to = False, None
  try:
    for step in range(start, total):
      batch = parallel.shard_batch(_host_batch(dataset, config, step, host_rows, n), mesh)
      state, m = step_fn(state, batch, rng.step_key(config.seed, step))
      done = step + 1
      out.add(done, m)
      if mon is not None and (done % spe == 0 or done == total):
        records = out.records()
        state, stop, rolled_back_to = _monitor(mon, state, records)
        out.write(records)
      elif done % config.train.log_every_steps == 0:
        out.flush()
      if stop:
        break
      if done % config.checkpoint.every_steps == 0 and done < total:
        out.flush()  # never checkpoint a state whose metrics were not checked
        ckpt.save(done, state)
    out.flush()
    if ckpt.latest_step() != done:
      ckpt.save(done, state)
    if stop:  # after the save (synchronous): the weights it ended with are on disk
      mon.finish(done, rolled_back_to)
    best = None
    if mon is not None and mon.action == 'best' and mon.record['best'] is not None:
      best = mon.best_state(state)
  finally:
    out.close()
    ckpt.close()
    if mon is not None:
      mon.close()
  return FitResult(state, None if mon is None else mon.record, best)
