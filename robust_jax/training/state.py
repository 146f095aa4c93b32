"""The training state (what checkpoints hold), its initial value and its checkpoint items.

    state = state_lib.init_state(model, tx, key, image_shape, ema_decay)
    items = state_lib.to_items(state)             # {'state': TrainState[, 'carry': ...]}
    state = state_lib.from_items(state, items)    # the inverse, shaped like `state`

Kept apart from the loop so that loading a saved run (run_io.py) needs only the model, the
optimizer, the checkpointer and this, not the training loop and the defenses.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp

from robust_jax import model_fns


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 scalar: training steps (minibatches) taken
  params: Any
  batch_stats: Any           # {} for models without BatchNorm
  opt_state: Any
  ema_params: Any            # a copy of params when optim.ema_decay > 0, else None

  def eval_params(self):
    return self.params if self.ema_params is None else self.ema_params


@flax.struct.dataclass
class FreeTrainState(TrainState):
  """Free AT's state: a TrainState plus the input perturbation carried between minibatches.

  The carry is training-only state. Checkpoints hold the plain TrainState as item 'state' (so
  every loader reads a free-AT workdir as any other) and the carry as item 'carry'
  (training/checkpoint.py).
  """
  carry: Any = None          # f32[B,H,W,C]: row i's perturbation, B the global batch

  def without_carry(self):
    return TrainState(step=self.step, params=self.params, batch_stats=self.batch_stats,
                      opt_state=self.opt_state, ema_params=self.ema_params)


def init_state(model, tx, key, image_shape, ema_decay=0.0, carry_shape=None):
  """The initial state; with `carry_shape` (B,H,W,C) a FreeTrainState with a zero carry."""
  v = model_fns.init_variables(model, key, image_shape)
  params = v['params']
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=v.get('batch_stats', {}), opt_state=tx.init(params),
                     # A copy, never the same buffers: the step donates its whole state.
                     ema_params=jax.tree.map(jnp.copy, params) if ema_decay > 0 else None)
  if carry_shape is None:
    return state
  return FreeTrainState(**vars(state), carry=jnp.zeros(carry_shape, jnp.float32))


def to_items(state):
  """The checkpoint items of `state`: {'state': TrainState} plus free AT's {'carry': {...}}."""
  if isinstance(state, FreeTrainState):
    return {'state': state.without_carry(), 'carry': {'carry': state.carry}}
  return {'state': state}


def from_items(state, items):
  """The state `to_items` split into `items`, of the type of `state`."""
  if not isinstance(state, FreeTrainState):
    return items['state']
  return state.replace(**vars(items['state']), carry=items['carry']['carry'])
