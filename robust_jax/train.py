"""Training: `make_train_step` (pure, data-parallel) and the resumable training loop.

    step_fn = make_train_step(model, tx, defense, config, mesh)
    state, metrics = step_fn(state, batch, step_key)

The step runs per device under `shard_map` over the 'data' axis: each device attacks and
differentiates its shard; gradients and BatchNorm statistics are averaged with `lax.pmean`.
"""

import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
import tqdm
from jax.sharding import PartitionSpec as P

from robust_jax import checkpoint
from robust_jax import data as data_lib
from robust_jax import defenses as defense_lib
from robust_jax import metrics_log
from robust_jax import model_fns
from robust_jax import optim
from robust_jax import parallel
from robust_jax import rng



@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 scalar: optimiser steps taken
  params: Any
  batch_stats: Any           # {} for models without BatchNorm
  opt_state: Any
  ema_params: Any            # a copy of params when optim.ema_decay > 0, else None

  def eval_params(self):
    return self.params if self.ema_params is None else self.ema_params


def init_state(model, tx, key, image_shape, ema_decay=0.0):
  v = model_fns.init_variables(model, key, image_shape)
  params = v['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=v.get('batch_stats', {}), opt_state=tx.init(params),
                    # A copy, never the same buffers: the step donates its whole state.
                    ema_params=jax.tree.map(jnp.copy, params) if ema_decay > 0 else None)


def make_train_step(model, tx, defense, config, mesh):
  """Returns jitted `step(state, batch, key) -> (state, metrics)`.

  `batch`: {'image': uint8[B,H,W,C], 'label': int32[B]} sharded over 'data'; `key`: the step's
  PRNG key. Metrics are global sums (`loss_sum`, `correct`, `count`) plus `grad_norm` and `lr`.
  """
  ema_decay = config.optim.ema_decay
  bn_mode = config.model.attack_bn_mode
  random_crop, random_flip = config.data.random_crop, config.data.random_flip

  def per_device(state, images, labels, key):
    local_b = images.shape[0]
    pos = parallel.global_positions(local_b)
    x = images.astype(jnp.float32) / 255.0
    x = data_lib.augment(x, rng.example_keys(key, rng.AUGMENT, pos), random_crop=random_crop,
                random_flip=random_flip)
    attack_logits = model_fns.logits_fn(model, state.params, state.batch_stats, bn_mode)
    x_adv = jax.lax.stop_gradient(
        defense.perturb(attack_logits, x, labels, rng.example_keys(key, rng.ATTACK, pos)))
    dropout_key = jax.random.fold_in(jax.random.fold_in(key, rng.DROPOUT),
                                     jax.lax.axis_index(parallel.AXIS))
    onehot = jax.nn.one_hot(labels, jax.eval_shape(attack_logits, x[:1]).shape[-1])

    def loss_fn(params):
      def forward(v):
        return model_fns.forward_train(model, params, state.batch_stats, v, dropout_key)
      per_example, logits, new_stats = defense.loss(forward, x, x_adv, onehot)
      return jnp.mean(per_example), (per_example, logits, new_stats)

    grads, (per_example, logits, new_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, parallel.AXIS)
    new_stats = jax.lax.pmean(new_stats, parallel.AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
      ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                              opt_state=opt_state, ema_params=ema)
    correct = jnp.sum(jnp.argmax(logits, -1) == labels)
    metrics = {
        'loss_sum': jax.lax.psum(jnp.sum(per_example), parallel.AXIS),
        'correct': jax.lax.psum(correct, parallel.AXIS),
        'count': jax.lax.psum(jnp.int32(local_b), parallel.AXIS),
        'grad_norm': optax.tree.norm(grads),
    }
    return new_state, metrics

  mapped = parallel.per_device(per_device, mesh, in_specs=(P(), P('data'), P('data'), P()),
                               out_specs=(P(), P()))

  def step(state, batch, key):
    return mapped(state, batch['image'], batch['label'], key)

  return jax.jit(step, donate_argnums=0)


def _finite_or_raise(step, record):
  for name, value in record.items():
    if isinstance(value, float) and not jnp.isfinite(value):
      raise FloatingPointError(
          f'Training diverged: {name}={value} at step {step}. The last good checkpoint is kept '
          'in WORKDIR/checkpoints; lower optim.learning_rate or set optim.grad_clip_norm and '
          'rerun.')


def _host_batch(dataset, config, step, host_rows):
  idx = data_lib.train_indices(config.seed, step, config.train.batch_size,
                               len(dataset.train_labels))[host_rows]
  return {'image': dataset.train_images[idx], 'label': dataset.train_labels[idx]}


def num_train_steps(config, num_examples):
  if config.train.steps > 0:
    return config.train.steps
  return config.train.epochs * data_lib.steps_per_epoch(num_examples, config.train.batch_size)


def fit(config, workdir, dataset, model, mesh, progress=True):
  """Trains (or resumes) `model` on `dataset`; returns the final replicated TrainState.

  Checkpoints every `config.checkpoint.every_steps` steps and at the end; metrics go to
  `metrics.jsonl` and TensorBoard every `config.train.log_every_steps` steps.
  """
  n = len(dataset.train_labels)
  spe = data_lib.steps_per_epoch(n, config.train.batch_size)
  total = num_train_steps(config, n)
  tx, schedule = optim.make_optimizer(config.optim, total, spe)
  state = init_state(model, tx, rng.root_key(config.seed, rng.INIT),
                     dataset.train_images.shape[1:], config.optim.ema_decay)
  state = parallel.replicate(state, mesh)
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint.every_steps,
                                 config.checkpoint.max_to_keep)
  state, _ = ckpt.restore_or_init(state)
  start = int(jax.device_get(state.step))
  log = metrics_log.MetricsLog(workdir, start)
  step_fn = make_train_step(model, tx, defense_lib.build(config), config, mesh)
  host_rows = data_lib.host_slice(config.train.batch_size, jax.process_index(),
                                  jax.process_count())
  bar = tqdm.tqdm(total=total, initial=start, desc='train', unit='step', dynamic_ncols=True,
                  disable=not progress or jax.process_index() != 0, mininterval=2.0)
  pending, t_last, s_last = [], time.perf_counter(), start

  def flush():
    nonlocal pending, t_last, s_last
    if not pending:
      return
    now = time.perf_counter()
    rate = (pending[-1][0] - s_last) / max(now - t_last, 1e-9)
    for step, m in jax.device_get(pending):
      count = max(int(m['count']), 1)
      record = {'epoch': step / spe, 'loss': float(m['loss_sum']) / count,
                'train_accuracy': float(m['correct']) / count,
                'grad_norm': float(m['grad_norm']), 'lr': float(schedule(step - 1)),
                'steps_per_s': rate}
      _finite_or_raise(step, record)
      log.write(step, record)
    bar.set_postfix(loss=f'{record["loss"]:.3f}', acc=f'{record["train_accuracy"]:.3f}')
    pending, t_last, s_last = [], now, pending[-1][0]

  try:
    for step in range(start, total):
      batch = parallel.shard_batch(_host_batch(dataset, config, step, host_rows), mesh)
      state, m = step_fn(state, batch, rng.step_key(config.seed, step))
      pending.append((step + 1, m))
      if (step + 1) % config.train.log_every_steps == 0:
        flush()
      if (step + 1) % config.checkpoint.every_steps == 0 and step + 1 < total:
        flush()  # never checkpoint a state whose metrics were not checked
        ckpt.save(step + 1, state, force=True)
      bar.update(1)
    flush()
    if ckpt.latest_step() != total:
      ckpt.save(total, state, force=True)
  finally:
    bar.close()
    log.close()
    ckpt.close()
  return state
