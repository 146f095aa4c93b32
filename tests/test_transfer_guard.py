"""The training step makes no host round-trips: with state, batch and key already on the devices,
steps after the first (which compiles) run under `jax.transfer_guard('disallow')`, which raises on
any implicit host-to-device or device-to-host transfer (a Python scalar or numpy array fed in, a
value pulled back to decide something on the host)."""

import jax
import numpy as np
import pytest

from robust_jax import defenses
from robust_jax import models
from robust_jax import parallel
from robust_jax import rng
from robust_jax.training import optim
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib
from tests import helpers

SHAPE = (28, 28, 1)


@pytest.mark.parametrize('defense,model_name', [('pgd_at', 'small_cnn'),
                                                ('standard', 'preact_resnet18')])
def test_train_steps_run_under_disallowing_transfer_guard(defense, model_name):
  config = helpers.quick_config(**{'defense.name': defense, 'model.name': model_name})
  model = models.build(config.model, num_classes=10, mean=(0.5,), std=(0.25,))
  mesh = parallel.make_mesh()
  tx, _ = optim.make_optimizer(config.optim, 10, 5)
  state = parallel.replicate(state_lib.init_state(model, tx, jax.random.key(0), SHAPE), mesh)
  step = step_lib.make_train_step(model, tx, defenses.build(config), config, mesh)
  r = np.random.default_rng(0)
  batches = [parallel.shard_batch({'image': r.integers(0, 256, (8,) + SHAPE).astype(np.uint8),
                                   'label': r.integers(0, 10, 8).astype(np.int32)}, mesh)
             for _ in range(3)]
  keys = [jax.device_put(rng.step_key(0, i), parallel.replicated(mesh)) for i in range(3)]
  state, metrics = step(state, batches[0], keys[0])  # compiles; transfers allowed
  jax.block_until_ready(metrics)

  with jax.transfer_guard('disallow'):
    for i in (1, 2):
      state, metrics = step(state, batches[i], keys[i])
    jax.block_until_ready((state, metrics))
    # The guard is live: the same step fed a host (numpy) batch is refused.
    host_batch = {'image': np.zeros((8,) + SHAPE, np.uint8), 'label': np.zeros(8, np.int32)}
    with pytest.raises(Exception, match='[Dd]isallowed'):
      step(state, host_batch, keys[0])

  assert int(jax.device_get(state.step)) == 3
  assert np.isfinite(float(jax.device_get(metrics['loss_sum'])))
