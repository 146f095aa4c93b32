"""Training step: data-parallel equivalence, learning, divergence handling, schedules."""

import importlib
import json
import os

import jax
import numpy as np
import pytest

from robust_jax import data as data_lib
from robust_jax import defenses
from robust_jax import models
from robust_jax import parallel
from robust_jax import rng
from robust_jax.training import loop
from robust_jax.training import optim
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib
from tests import helpers


def _run_steps(config, dataset, devices, num_steps):
  mesh = parallel.make_mesh(devices)
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  tx, _ = optim.make_optimizer(config.optim, 100, 10)
  state = state_lib.init_state(model, tx, rng.root_key(config.seed, rng.INIT),
                               dataset.train_images.shape[1:])
  state = parallel.replicate(state, mesh)
  step_fn = step_lib.make_train_step(model, tx, defenses.build(config), config, mesh)
  n = len(dataset.train_labels)
  metrics = None
  for step in range(num_steps):
    idx = data_lib.train_indices(config.seed, step, config.train.batch_size, n)
    batch = parallel.shard_batch({'image': dataset.train_images[idx],
                                  'label': dataset.train_labels[idx]}, mesh)
    state, metrics = step_fn(state, batch, rng.step_key(config.seed, step))
  return jax.device_get(state), jax.device_get(metrics)


# SGD is linear in the gradient, so only float rounding separates the runs. Adam divides by
# sqrt(v) + 1e-8: on weights whose gradient is ~1e-9 that turns rounding noise into updates of up
# to ~lr/100, so its tolerance is stated in units of the learning rate.
@pytest.mark.multidevice
@pytest.mark.parametrize('optimizer,atol', [('sgd', 1e-5), ('adam', 0.05 * 0.01)])
def test_one_and_four_devices_give_the_same_parameters(optimizer, atol):
  config = helpers.quick_config(**{'optim.name': optimizer, 'optim.learning_rate': 0.01,
                                   'train.batch_size': 16})
  dataset = helpers.tiny_dataset()
  assert len(jax.devices()) == 4
  one, m1 = _run_steps(config, dataset, jax.devices()[:1], 4)
  four, m4 = _run_steps(config, dataset, jax.devices(), 4)
  assert int(one.step) == int(four.step) == 4
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)
  assert int(m1['count']) == int(m4['count']) == 16
  np.testing.assert_allclose(m1['loss_sum'], m4['loss_sum'], rtol=1e-4)
  # The run actually moved the parameters (a test that can fail).
  fresh, _ = _run_steps(config, dataset, jax.devices()[:1], 0)
  moved = sum(float(np.abs(a - b).sum()) for a, b in zip(jax.tree.leaves(one.params),
                                                          jax.tree.leaves(fresh.params)))
  assert moved > 0


def test_standard_training_learns_the_tiny_task():
  config = helpers.quick_config(**{'defense.name': 'standard', 'optim.learning_rate': 3e-3,
                                   'train.batch_size': 32})
  dataset = helpers.tiny_dataset(n_train=256)
  _, first = _run_steps(config, dataset, jax.devices(), 1)
  _, last = _run_steps(config, dataset, jax.devices(), 40)
  assert last['loss_sum'] < 0.5 * first['loss_sum']


def test_batch_norm_model_trains_data_parallel():
  config = helpers.quick_config(**{'model.name': 'wide_resnet', 'model.depth': 10,
                                   'model.width': 1})
  state, metrics = _run_steps(config, helpers.tiny_dataset(), jax.devices(), 2)
  assert state.batch_stats and np.isfinite(float(metrics['loss_sum']))


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = helpers.quick_config(**{'optim.learning_rate': 1e30, 'optim.name': 'sgd',
                                   'train.steps': 6, 'checkpoint.every_steps': 1,
                                   'defense.name': 'standard'})
  dataset = helpers.tiny_dataset()
  mesh = parallel.make_mesh()
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  with pytest.raises(FloatingPointError, match=r'at step \d+'):
    loop.fit(config, str(tmp_path), dataset, model, mesh, progress=False)
  saved = sorted(int(p) for p in os.listdir(tmp_path / 'checkpoints') if p.isdigit())
  assert saved, 'the checkpoints written before divergence must stay on disk'
  with open(tmp_path / 'metrics.jsonl') as f:
    logged = [json.loads(line) for line in f]
  assert all(np.isfinite(r['loss']) for r in logged)


def test_fit_resumes_exactly(tmp_path):
  config = helpers.quick_config(**{'train.steps': 4, 'checkpoint.every_steps': 2})
  dataset = helpers.tiny_dataset()
  mesh = parallel.make_mesh()
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  straight = loop.fit(config, str(tmp_path / 'a'), dataset, model, mesh, progress=False).state
  half = helpers.quick_config(**{'train.steps': 2, 'checkpoint.every_steps': 2})
  loop.fit(half, str(tmp_path / 'b'), dataset, model, mesh, progress=False)
  resumed = loop.fit(config, str(tmp_path / 'b'), dataset, model, mesh, progress=False).state
  for a, b in zip(jax.tree.leaves(jax.device_get(straight.params)),
                  jax.tree.leaves(jax.device_get(resumed.params))):
    np.testing.assert_array_equal(a, b)
  with open(tmp_path / 'b' / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize('schedule', ['constant', 'piecewise', 'cosine', 'cyclic'])
def test_schedules(schedule):
  c = helpers.quick_config(**{'optim.schedule': schedule, 'optim.learning_rate': 0.1})
  _, sched = optim.make_optimizer(c.optim, total_steps=100, steps_per_epoch=10)
  lrs = np.array([float(sched(s)) for s in range(100)])
  assert lrs.max() <= 0.1 + 1e-6 and lrs.min() >= 0
  if schedule == 'cyclic':
    assert abs(int(np.argmax(lrs)) - 40) <= 1 and lrs[0] == 0
  if schedule == 'piecewise':
    np.testing.assert_allclose([lrs[10], lrs[60], lrs[90]], [0.1, 0.01, 0.001], rtol=1e-5)
  if schedule == 'cosine':
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.001


def test_ema_weights_trail_the_parameters():
  config = helpers.quick_config(**{'optim.ema_decay': 0.5, 'defense.name': 'standard'})
  dataset = helpers.tiny_dataset()
  mesh = parallel.make_mesh()
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  tx, _ = optim.make_optimizer(config.optim, 10, 10)
  state = state_lib.init_state(model, tx, rng.root_key(0, rng.INIT), (28, 28, 1), ema_decay=0.5)
  init = jax.tree.map(np.array, state.params)  # a copy: the step donates the state
  state = parallel.replicate(state, mesh)
  step_fn = step_lib.make_train_step(model, tx, defenses.build(config), config, mesh)
  batch = parallel.shard_batch({'image': dataset.train_images[:8],
                                'label': dataset.train_labels[:8]}, mesh)
  state, _ = step_fn(state, batch, rng.step_key(0, 0))
  state = jax.device_get(state)
  for p0, p1, e in zip(jax.tree.leaves(init), jax.tree.leaves(state.params),
                       jax.tree.leaves(state.ema_params)):
    np.testing.assert_allclose(e, 0.5 * p0 + 0.5 * p1, rtol=1e-5, atol=1e-7)
  assert state.eval_params() is state.ema_params


def test_the_old_import_paths_are_deprecated_aliases():
  from robust_jax import checkpoint as old_checkpoint  # pylint: disable=g-import-not-at-top
  from robust_jax import train as old_train  # pylint: disable=g-import-not-at-top
  from robust_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  for module in (old_train, old_checkpoint):
    with pytest.warns(DeprecationWarning, match=r'use robust_jax\.training'):
      importlib.reload(module)
  assert old_train.fit is loop.fit and old_train.make_train_step is step_lib.make_train_step
  assert old_train.init_state is state_lib.init_state and old_checkpoint.load is checkpoint.load
