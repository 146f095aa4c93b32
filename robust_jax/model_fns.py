"""Model application: variables, logits functions for attacks, and the training forward pass."""

import jax
import jax.numpy as jnp

BN_MODES = ('eval', 'train')


def init_variables(model, key, image_shape):
  """Initial {'params', 'batch_stats'?} for inputs f32[1,H,W,C]."""
  params_key, dropout_key = jax.random.split(key)
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  return model.init({'params': params_key, 'dropout': dropout_key}, x, train=False)


def variables(params, batch_stats):
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def logits_fn(model, params, batch_stats, bn_mode='eval'):
  """`x: f32[B,H,W,C] in [0,1] -> f32[B,K]` as an attack sees the model.

  bn_mode 'eval' uses BatchNorm's running statistics; 'train' normalises with the attacked batch's
  own statistics and discards the updated running ones. Dropout is always off.
  """
  v = variables(params, batch_stats)
  if not batch_stats or bn_mode == 'eval':
    return lambda x: model.apply(v, x, train=False)
  if bn_mode != 'train':
    raise ValueError(f'model.attack_bn_mode={bn_mode!r}; valid: {list(BN_MODES)}.')
  # No 'dropout' rng is given: a model with both BatchNorm and dropout fails loudly here rather
  # than attacking a randomly dropped-out network.
  return lambda x: model.apply(v, x, train=True, mutable=['batch_stats'])[0]


def forward_train(model, params, batch_stats, x, dropout_key):
  """Training forward pass: returns (logits, new_batch_stats)."""
  v = variables(params, batch_stats)
  if batch_stats:
    logits, updates = model.apply(v, x, train=True, mutable=['batch_stats'],
                                  rngs={'dropout': dropout_key})
    return logits, updates['batch_stats']
  return model.apply(v, x, train=True, rngs={'dropout': dropout_key}), batch_stats
