"""Model application: variables, logits functions for attacks, and the training forward pass.

Models behind a random input transformation (`defenses.transforms.Preprocessed`, e.g. random
resizing or Gaussian noise) take one PRNG key per example; the functions here pass them and, with
`bpda=True`, ask a transformation model for its BPDA gradient (forward pass unchanged).
"""

import jax
import jax.numpy as jnp

from robust_jax import rng
from robust_jax.defenses import transforms

BN_MODES = ('eval', 'train')


def is_random(model):
  """Whether the model's output is random (needs keys; attacked with EOT)."""
  return transforms.is_random(model)


def init_variables(model, key, image_shape):
  """Initial {'params', 'batch_stats'?} for inputs f32[1,H,W,C]."""
  params_key, dropout_key = jax.random.split(key)
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  kwargs = {'keys': jax.random.split(dropout_key, 1)} if is_random(model) else {}
  return model.init({'params': params_key, 'dropout': dropout_key}, x, train=False, **kwargs)


def variables(params, batch_stats):
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def default_keys(batch):
  """The same base key for every example (their draws still differ through the content hash)."""
  return jax.vmap(lambda _: jax.random.key(rng.DEFAULT_MODEL_SEED))(jnp.arange(batch))


def _extra(model, x, keys, bpda):
  kwargs = {}
  if bpda and transforms.is_preprocessed(model):
    kwargs['bpda'] = True
  if is_random(model):
    if keys is None:
      keys = default_keys(x.shape[0])
    kwargs['keys'] = keys
  return kwargs


def logits_fn(model, params, batch_stats, bn_mode='eval', *, keys=None, bpda=False):
  """`x: f32[B,H,W,C] in [0,1] -> f32[B,K]` as an attack sees the model.

  bn_mode 'eval' uses BatchNorm's running statistics; 'train' normalises with the attacked batch's
  own statistics and discards the updated running ones. Dropout is always off.
  keys: one PRNG key per example, for random models (default: fixed keys). Each call draws from
  the keys folded with the inputs' content, so a changed input sees a new draw.
  bpda: for an input-transformation model, the gradient of the transformation's approximation
  (BPDA) instead of its own; the value is unchanged. Ignored for other models.
  """
  v = variables(params, batch_stats)
  if bn_mode not in BN_MODES:
    raise ValueError(f'model.attack_bn_mode={bn_mode!r}; valid: {list(BN_MODES)}.')
  if not batch_stats or bn_mode == 'eval':
    return lambda x: model.apply(v, x, train=False, **_extra(model, x, keys, bpda))
  # No 'dropout' rng is given: a model with both BatchNorm and dropout fails loudly here rather
  # than attacking a randomly dropped-out network.
  return lambda x: model.apply(v, x, train=True, mutable=['batch_stats'],
                               **_extra(model, x, keys, bpda))[0]


def eot_logits_fn(model, params, batch_stats, bn_mode, keys=None, samples=1, bpda=False):
  """Expectation over Transformation (Athalye et al. 2018) for a random model.

  Returns `x -> f32[B,K]`: the mean over `samples` draws of the log-probabilities (draw j of
  example i uses fold_in(keys[i], j), then the content hash). Cross-entropy and margin losses of
  it average the per-draw gradients. For a deterministic model, the plain logits function.
  keys None: fixed keys (for callers that batch examples themselves, like the sanity checks).
  """
  if not is_random(model) or samples <= 1:
    return logits_fn(model, params, batch_stats, bn_mode, keys=keys, bpda=bpda)

  def fn(x):
    base = default_keys(x.shape[0]) if keys is None else keys
    return eot_mean(lambda kj: logits_fn(model, params, batch_stats, bn_mode, keys=kj,
                                         bpda=bpda)(x), base, samples)

  return fn


def eot_mean(logits_of_keys, keys, samples):
  """The mean over `samples` draws of the log-probabilities `log_softmax(logits_of_keys(kj))`,
  draw j of example i with key fold_in(keys[i], j)."""
  def draw(j):
    return jax.nn.log_softmax(logits_of_keys(jax.vmap(jax.random.fold_in, (0, None))(keys, j)))
  return jnp.mean(jax.vmap(draw)(jnp.arange(samples)), axis=0)


def forward_train(model, params, batch_stats, x, dropout_key):
  """Training forward pass: returns (logits, new_batch_stats).

  A random model's per-example keys are split from `dropout_key`.
  """
  v = variables(params, batch_stats)
  kwargs = {}
  if is_random(model):
    kwargs['keys'] = jax.random.split(jax.random.fold_in(dropout_key, rng.RANDOM_MODEL_TRAIN),
                                      x.shape[0])
  if batch_stats:
    logits, updates = model.apply(v, x, train=True, mutable=['batch_stats'],
                                  rngs={'dropout': dropout_key}, **kwargs)
    return logits, updates['batch_stats']
  return model.apply(v, x, train=True, rngs={'dropout': dropout_key}, **kwargs), batch_stats
