"""Transfer attack from a surrogate checkpoint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import attacks
from robust_jax import errors
from robust_jax import experiment
from robust_jax import model_fns
from robust_jax import models
from robust_jax import run_io
from robust_jax.training import checkpoint
from robust_jax.training import optim
from robust_jax.training import state as state_lib
from tests import helpers


def _save_surrogate(workdir):
  config = helpers.quick_config()
  info_model = models.build(config.model, num_classes=10, mean=(0.2860,), std=(0.3530,))
  tx, _ = optim.make_optimizer(config.optim, 1, 1)
  state = state_lib.init_state(info_model, tx, jax.random.key(3), (28, 28, 1))
  ckpt = checkpoint.Checkpointer(str(workdir))
  ckpt.save(1, state=state)
  ckpt.close()
  (workdir / 'config.json').write_text(json.dumps(config.to_dict()))
  return info_model, state


def test_transfer_from_the_target_itself_equals_white_box_pgd(tmp_path):
  model, state = _save_surrogate(tmp_path)
  fn = model_fns.logits_fn(model, state.params, {}, 'eval')
  x = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
  y = jnp.argmax(fn(x), -1)
  cfg = dict(name='transfer', surrogate=str(tmp_path), eps=0.1, steps=5)
  key = jax.random.key(1)
  transfer = attacks.build(cfg, load_model=run_io.load_model)
  x_t = transfer(lambda v: v / 0, x, y, key)   # the target is never called
  x_w = attacks.build(dict(name='pgd', eps=0.1, steps=5, step_size=0.05))(fn, x, y, key)
  np.testing.assert_allclose(x_t, x_w, atol=1e-6)
  assert float(attacks.threat.distance(x_t, x, 'linf').max()) <= 0.1 + 1e-6


def test_load_model_and_missing_surrogate(tmp_path):
  _save_surrogate(tmp_path)
  _, params, _, config, step = experiment.load_model(str(tmp_path))
  assert step == 1 and config.model.name == 'small_cnn' and params
  with pytest.raises(errors.ConfigError, match='surrogate'):
    attacks.validate(dict(name='transfer', eps=0.1))
  with pytest.raises(FileNotFoundError, match='config.json'):
    attacks.build(dict(name='transfer', eps=0.1, surrogate=str(tmp_path / 'nope')),
                  load_model=run_io.load_model)


def test_the_surrogate_is_loaded_by_the_callers_loader(tmp_path):
  _save_surrogate(tmp_path)
  cfg = dict(name='transfer', surrogate=str(tmp_path), eps=0.1, steps=5)
  with pytest.raises(ValueError, match='load_model'):  # attacks import nothing that loads runs
    attacks.build(cfg)
  loaded = []

  def load_model(path):
    loaded.append(path)
    return run_io.load_model(path)

  attacks.build(cfg, load_model=load_model)
  assert loaded == [str(tmp_path)]
