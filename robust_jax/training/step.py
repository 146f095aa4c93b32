"""The training step: pure, data-parallel, one minibatch.

    step_fn = step.make_train_step(model, tx, defense, config, mesh)
    state, metrics = step_fn(state, batch, step_key)

The step runs per device under `shard_map` over the 'data' axis: each device attacks and
differentiates its shard; gradients and BatchNorm statistics are averaged with `lax.pmean`.
Defenses that change the step itself (see robust_jax/defenses/__init__.py) plug in here: free AT
replays each batch (`free_at.run_replays`, its carried perturbation in FreeTrainState.carry),
AWP takes the gradient at perturbed weights, and distillation and ensemble AT get the weights of
their fixed models (teacher, static models) as an argument of the jitted step.
"""

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from robust_jax import data as data_lib
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax.defenses import free_at


def carry_shape(defense, config, image_shape):
  """The shape of the carried perturbation `defense` needs (free AT), or None."""
  if defense.replay_update is None:
    return None
  return (config.train.batch_size,) + tuple(image_shape)


def _make_apply_grads(tx, ema_decay):
  """`apply_grads(state, grads, stats) -> (state, grad norm)`: the averaged update, per device."""

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

  return apply_grads


def _objective(model, loss, x, onehot):
  """`loss_fn(params, batch_stats, x_adv, dropout_key) -> (mean, (per_example, logits, stats))`.

  The defense's `loss` on the clean shard `x` and its attacked copy, the model in training mode.
  """

  def loss_fn(params, batch_stats, x_adv, dkey):
    def forward(v):
      return model_fns.forward_train(model, params, batch_stats, v, dkey)
    per_example, logits, new_stats = loss(forward, x, x_adv, onehot)
    return jnp.mean(per_example), (per_example, logits, new_stats)

  return loss_fn


def _attacked_update(state, x_adv, loss_fn, defense, dropout_key, apply_grads, steps_per_epoch):
  """One update on the attacked shard `x_adv` (AWP: with the gradient at perturbed weights).

  Returns (state, per_example f32[b], logits f32[b,K], grad norm).
  """
  grad_fn = jax.grad(loss_fn, has_aux=True)
  at = state.params
  if defense.weight_perturb is not None:  # AWP: the gradient at params + v
    proxy, _ = grad_fn(state.params, state.batch_stats, x_adv,
                       jax.random.fold_in(dropout_key, rng.DROPOUT_PROXY))
    v = defense.weight_perturb(state.params, jax.lax.pmean(proxy, parallel.AXIS),
                               state.step / steps_per_epoch)
    at = jax.tree.map(jnp.add, state.params, v)
  grads, (per_example, logits, new_stats) = grad_fn(at, state.batch_stats, x_adv, dropout_key)
  state, grad_norm = apply_grads(state, grads, new_stats)
  return state, per_example, logits, grad_norm


def _step_metrics(per_example, logits, labels, grad_norm):
  """Global sums over the devices (loss, correct, count) and the gradient's norm."""
  return {
      'loss_sum': jax.lax.psum(jnp.sum(per_example), parallel.AXIS),
      'correct': jax.lax.psum(jnp.sum(jnp.argmax(logits, -1) == labels), parallel.AXIS),
      'count': jax.lax.psum(jnp.int32(per_example.size), parallel.AXIS),
      'grad_norm': grad_norm,
  }


def make_train_step(model, tx, defense, config, mesh, steps_per_epoch=1,
                    load_model=run_io.load_model):
  """Returns `step(state, batch, key) -> (state, metrics)`, jitted, donating `state`.

  `batch`: {'image': uint8[B,H,W,C], 'label': int32[B]} sharded over 'data'; `key`: the step's
  PRNG key. Metrics are global sums (`loss_sum`, `correct`, `count`; over all replays for free
  AT) plus `grad_norm`. `steps_per_epoch` turns the step into the epoch that epoch-based
  defense schedules see (AWP's warm-up). Models the defense needs besides the one trained
  (`defense.load`) are loaded here, once, with `load_model` (workdir -> run_io.Run), and passed
  to every step as arguments.
  """
  bn_mode = config.model.attack_bn_mode
  random_crop, random_flip = config.data.random_crop, config.data.random_flip
  frozen, bind = ({}, None) if defense.load is None else defense.load(load_model)
  frozen = parallel.replicate(frozen, mesh)
  apply_grads = _make_apply_grads(tx, config.optim.ema_decay)

  def per_device(state, images, labels, key, frozen):
    pos = parallel.global_positions(images.shape[0])
    x = images.astype(jnp.float32) / 255.0
    x = data_lib.augment(x, rng.example_keys(key, rng.AUGMENT, pos), random_crop=random_crop,
                         random_flip=random_flip)
    perturb, loss = (defense.perturb, defense.loss) if bind is None else bind(frozen, key)
    attack_logits = model_fns.logits_fn(model, state.params, state.batch_stats, bn_mode)
    dropout_key = jax.random.fold_in(jax.random.fold_in(key, rng.DROPOUT),
                                     jax.lax.axis_index(parallel.AXIS))
    onehot = jax.nn.one_hot(labels, jax.eval_shape(attack_logits, x[:1]).shape[-1])
    loss_fn = _objective(model, loss, x, onehot)
    if defense.replay_update is None:
      x_adv = jax.lax.stop_gradient(
          perturb(attack_logits, x, labels, rng.example_keys(key, rng.ATTACK, pos)))
      state, per_example, logits, grad_norm = _attacked_update(
          state, x_adv, loss_fn, defense, dropout_key, apply_grads, steps_per_epoch)
    else:  # free AT: per_example f32[m,b], logits f32[m,b,K] over the m replays
      state, per_example, logits, grad_norm = free_at.run_replays(
          state, x, replays=defense.replays, update=defense.replay_update, objective=loss_fn,
          apply_grads=apply_grads, dropout_key=dropout_key, axis=parallel.AXIS)
    metrics = _step_metrics(per_example, logits, labels, grad_norm)
    return state.replace(step=state.step + 1), metrics

  mapped = parallel.per_device(per_device, mesh,
                               in_specs=(P(), P('data'), P('data'), P(), P()),
                               out_specs=(P(), P()))
  jitted = jax.jit(mapped, donate_argnums=0)

  def step(state, batch, key):
    return jitted(state, batch['image'], batch['label'], key, frozen)

  return step
