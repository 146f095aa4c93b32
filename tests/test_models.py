"""Tests for robust_jax.models: shapes, parameter counts, normalisation, BatchNorm and dropout."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from robust_jax import models

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)


def _cfg(name, depth=10, width=1):
  return ml_collections.ConfigDict(dict(name=name, depth=depth, width=width))


def _build(name, shape, num_classes=10, depth=10, width=1, mean=None, std=None, **kw):
  c = shape[-1]
  mean = (0.5,) * c if mean is None else mean
  std = (0.25,) * c if std is None else std
  return models.build(_cfg(name, depth, width), num_classes=num_classes, mean=mean, std=std, **kw)


def _images(shape, batch=2, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch,) + shape, jnp.float32)


# Everything runs under jit: one XLA compile per function instead of one per op (much faster).
def _init(model, x):
  rngs = {'params': jax.random.key(1), 'dropout': jax.random.key(2)}
  return jax.jit(lambda x: model.init(rngs, x, train=False))(x)


def _apply(model, variables, x, train=False, **kwargs):
  return jax.jit(lambda v, x: model.apply(v, x, train=train, **kwargs))(variables, x)


def _num_params(model, shape):
  x = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init({'params': jax.random.key(1)}, x, train=False), x)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('shape', [MNIST, CIFAR], ids=['28x28x1', '32x32x3'])
@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_logits_shape_and_dtype(name, shape):
  model = _build(name, shape, num_classes=7)   # WRN-10-1 for wide_resnet
  x = _images(shape)
  init_apply = jax.jit(lambda x: model.init_with_output(jax.random.key(1), x, train=False))
  logits, variables = init_apply(x)
  assert ('batch_stats' in variables) == models.has_batch_norm(name)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('depth,width,expected', [
    (28, 10, 36.5e6), (34, 10, 46.2e6), (70, 16, 266.8e6)])
def test_wide_resnet_param_counts(depth, width, expected):
  n = _num_params(_build('wide_resnet', CIFAR, depth=depth, width=width), CIFAR)
  assert abs(n - expected) / expected < 0.01, n


def test_preact_resnet18_param_count():
  n = _num_params(_build('preact_resnet18', CIFAR), CIFAR)
  assert abs(n - 11.17e6) / 11.17e6 < 0.01, n


def test_small_cnn_param_count_exact():
  expected = (16 * 1 * 16 + 16) + (32 * 16 * 16 + 32) + (1568 * 100 + 100) + (100 * 10 + 10)
  assert _num_params(_build('small_cnn', MNIST), MNIST) == expected


def test_normalisation_is_applied():
  x = _images(CIFAR)
  a = _build('small_cnn', CIFAR, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  b = _build('small_cnn', CIFAR, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
  variables = _init(a, x)
  out_a = _apply(a, variables, x, train=False)
  out_b = _apply(b, variables, x, train=False)
  np.testing.assert_raises(AssertionError, np.testing.assert_allclose, out_a, out_b)
  # Normalising by hand and using mean 0, std 1 gives the same logits.
  c = _build('small_cnn', CIFAR, mean=(0.0,), std=(1.0,))
  np.testing.assert_allclose(_apply(c, variables, (x - 0.5) / 0.25, train=False),
                             _apply(a, variables, x, train=False), rtol=1e-5, atol=1e-5)


def test_mean_std_channel_mismatch_raises():
  model = _build('small_cnn', MNIST, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  with pytest.raises(ValueError, match='channels'):
    _init(model, _images(MNIST))


def test_batch_norm_train_updates_stats_and_eval_does_not_need_mutable():
  model = _build('wide_resnet', MNIST, depth=10, width=1)
  x = _images(MNIST, batch=4)
  variables = _init(model, x)
  logits, updates = _apply(model, variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (4, 10) and set(updates) == {'batch_stats'}
  old, new = variables['batch_stats'], updates['batch_stats']
  assert jax.tree.structure(old) == jax.tree.structure(new)
  assert not np.allclose(old['bn']['mean'], new['bn']['mean'])
  # Eval mode uses running statistics: no mutable collection, and each example is independent
  # of the rest of the batch.
  eval_logits = _apply(model, variables, x, train=False)
  np.testing.assert_allclose(_apply(model, variables, x[:1], train=False), eval_logits[:1],
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(flax.errors.ModifyScopeVariableError):  # train=True needs mutable stats
    _apply(model, variables, x, train=True)


def test_dropout_only_in_train_mode():
  assert models.has_dropout('trades_cnn')
  assert not any(models.has_dropout(n) for n in models.MODELS if n != 'trades_cnn')
  model = _build('trades_cnn', MNIST)
  x = _images(MNIST, batch=4)
  variables = _init(model, x)
  train = lambda k: _apply(model, variables, x, train=True, rngs={'dropout': jax.random.key(k)})
  assert not np.allclose(train(3), train(4))
  np.testing.assert_array_equal(train(3), train(3))
  np.testing.assert_array_equal(_apply(model, variables, x, train=False),
                                _apply(model, variables, x, train=False))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = _build('wide_resnet', MNIST, depth=10, width=1, dtype=jnp.bfloat16)
  x = _images(MNIST)
  variables = _init(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
  logits, _ = _apply(model, variables, x, train=True, mutable=['batch_stats'])
  assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


def test_config_dtype_and_fast_ops_reach_the_model():
  cfg = ml_collections.ConfigDict(dict(name='madry_cnn', dtype='bfloat16', fast_ops=False))
  model = models.build(cfg, num_classes=10, mean=(0.5,), std=(0.25,))
  assert model.dtype == jnp.bfloat16 and model.fast_ops is False
  x = _images((16, 16, 1))
  variables = _init(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
  assert _apply(model, variables, x).dtype == jnp.float32
  # Older configs (e.g. a workdir's config.json from before these fields) get the defaults.
  default = _build('madry_cnn', MNIST)
  assert default.dtype == jnp.float32 and default.fast_ops is True
  with pytest.raises(ValueError, match='bfloat16'):
    models.build(ml_collections.ConfigDict(dict(name='madry_cnn', dtype='float16')),
                 num_classes=10, mean=(0.5,), std=(0.25,))


def test_has_batch_norm():
  assert models.has_batch_norm('preact_resnet18') and models.has_batch_norm('wide_resnet')
  assert not any(models.has_batch_norm(n) for n in ('small_cnn', 'madry_cnn', 'trades_cnn'))


def test_unknown_name_lists_valid_names():
  for fn in (lambda: _build('resnet50', CIFAR), lambda: models.has_batch_norm('resnet50'),
             lambda: models.has_dropout('resnet50')):
    with pytest.raises(ValueError, match='wide_resnet') as err:
      fn()
    assert all(name in str(err.value) for name in models.MODELS)


@pytest.mark.parametrize('depth', [27, 4, 0, 29])
def test_bad_wide_resnet_depth_raises(depth):
  with pytest.raises(ValueError, match=r'6n\+4'):
    _build('wide_resnet', CIFAR, depth=depth)
  with pytest.raises(ValueError, match=r'6n\+4'):
    _init(models.WideResNet(depth=depth, width=1), _images(CIFAR, batch=1))


def test_validation_names_model_dtype_and_its_choices():
  from configs import default  # pylint: disable=g-import-not-at-top
  from robust_jax import errors  # pylint: disable=g-import-not-at-top
  from robust_jax import validation  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model.dtype = 'float16'
  with pytest.raises(errors.ConfigError, match=r"model.dtype='float16'; valid: \['float32', "
                                               r"'bfloat16'\]"):
    validation.validate(config)


def test_normalize_false_feeds_raw_pixels():
  """model.normalize=False: the dataset's mean and std are ignored (the MNIST papers' own code)."""
  cfg = ml_collections.ConfigDict(dict(name='small_cnn', normalize=False))
  raw = models.build(cfg, num_classes=10, mean=(0.5,), std=(0.25,))
  assert raw.mean == (0.0,) and raw.std == (1.0,)
  cfg.normalize = True
  assert models.build(cfg, num_classes=10, mean=(0.5,), std=(0.25,)).std == (0.25,)
