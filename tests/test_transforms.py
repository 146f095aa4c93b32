"""Input-transformation defenses: the transforms, the wrapped model, BPDA/EOT views, evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import errors
from robust_jax import evaluate
from robust_jax import experiment
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax.defenses import transforms
from tests import helpers


def _model(name, **fields):
  c = helpers.quick_config(**{'defense.name': name, **{f'defense.{k}': v for k, v in
                                                         fields.items()}})
  model = experiment.deployed_model(c, 10, (0.5,), (0.25,))
  v = model_fns.init_variables(model, jax.random.key(0), (28, 28, 1))
  return c, model, v['params']


def test_bit_depth_values_and_bpda_gradient():
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  q = transforms.bit_depth(x, 3)
  np.testing.assert_allclose(np.unique(np.asarray(q) * 7), np.arange(8), atol=1e-5)
  _, model, params = _model('bit_depth', bits=3)
  naive = model_fns.logits_fn(model, params, {})
  adaptive = model_fns.logits_fn(model, params, {}, bpda=True)
  np.testing.assert_array_equal(naive(x), adaptive(x))
  g_naive = jax.grad(lambda v: naive(v).sum())(x)
  g_bpda = jax.grad(lambda v: adaptive(v).sum())(x)
  assert float(jnp.abs(g_naive).max()) == 0.0  # rounding masks the gradient
  assert float(jnp.abs(g_bpda).max()) > 0.0


def test_median_filter_matches_numpy():
  x = np.random.default_rng(0).uniform(size=(2, 6, 7, 2)).astype(np.float32)
  out = np.asarray(transforms.median_filter(jnp.asarray(x), 3))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  for i in range(6):
    for j in range(7):
      np.testing.assert_allclose(out[:, i, j], np.median(padded[:, i:i + 3, j:j + 3], axis=(1, 2)),
                                 rtol=1e-6)


def test_bad_transform_field_is_a_config_error():
  c = helpers.quick_config(**{'defense.name': 'bit_depth'})
  c.defense.bits = 0
  with pytest.raises(errors.ConfigError, match='defense.bits'):
    transforms.from_config(c)


def test_per_example_keys_depend_on_content_not_batch():
  x = jax.random.uniform(jax.random.key(1), (4, 5, 5, 1))
  keys = jax.random.split(jax.random.key(2), 4)
  a = jax.random.key_data(transforms.per_example_keys(keys, x))
  b = jax.random.key_data(transforms.per_example_keys(keys[1:3], x[1:3]))
  np.testing.assert_array_equal(a[1:3], b)
  c = jax.random.key_data(transforms.per_example_keys(keys, x.at[0].add(0.01)))
  assert not np.array_equal(a[0], c[0]) and np.array_equal(a[1:], c[1:])


def test_evaluation_flags_a_naive_attack_on_a_masked_transform():
  c, model, params = _model('bit_depth', bits=1)
  c.eval.sanity_checks = True
  c.eval.sanity_examples = 8
  c.eval.attacks = {'naive': dict(name='pgd', eps=0.3, steps=3, step_size=0.1)}
  dataset = helpers.tiny_dataset(n_test=16)
  mesh = parallel.make_mesh()
  run = lambda cfg: evaluate.evaluate(model, params, {}, dataset, cfg, mesh, progress=False)[0]
  naive = run(c)
  check = {k['name']: k for k in naive['sanity_checks']}['adaptive attack on the transform']
  assert check['verdict'] == 'FAIL' and 'BPDA' in check['detail']
  c.eval.attacks = {'naive': dict(name='pgd', eps=0.3, steps=3, step_size=0.1),
                    'adaptive': dict(name='pgd', eps=0.3, steps=3, step_size=0.1, bpda=True)}
  both = run(c)
  check = {k['name']: k for k in both['sanity_checks']}['adaptive attack on the transform']
  assert check['verdict'] == 'PASS'
  assert (both['attacks']['adaptive']['accuracy'] <= both['attacks']['naive']['accuracy'])
