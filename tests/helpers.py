"""Small shared fixtures: a synthetic in-memory dataset and a quick config."""

import jax
import numpy as np

from configs import default
from robust_jax import data as data_lib
from robust_jax import model_fns


def tiny_dataset(n_train=64, n_test=37, shape=(28, 28, 1), num_classes=10, seed=0):
  """Random uint8 images whose label is decodable from the mean brightness (learnable)."""
  rng = np.random.default_rng(seed)

  def split(n):
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    base = (labels[:, None, None, None] * (255 // num_classes)).astype(np.int32)
    noise = rng.integers(0, 20, (n,) + shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8), labels

  train_x, train_y = split(n_train)
  test_x, test_y = split(n_test)
  return data_lib.Dataset(train_images=train_x, train_labels=train_y, test_images=test_x,
                          test_labels=test_y, num_classes=num_classes,
                          mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1], name='tiny')


def quick_config(**overrides):
  """The default config shrunk to a few cheap steps."""
  c = default.get_config()
  c.train.batch_size = 8
  c.train.steps = 3
  c.train.log_every_steps = 1
  c.checkpoint.every_steps = 2
  c.optim.schedule = 'constant'
  c.train_attack.steps = 2
  c.eval.batch_size = 8
  c.eval.num_examples = 0
  c.eval.sanity_checks = False
  for a in c.eval.attacks.values():
    a.steps = min(a.steps, 2)
  for k, v in overrides.items():
    node = c
    *path, last = k.split('.')
    for p in path:
      node = node[p]
    node[last] = v
  return c


def init_variables(model, key, image_shape):
  """model_fns.init_variables as one jitted program: eagerly, flax compiles every initializer for
  every parameter shape (seconds per model); this compiles once and hits the shared compilation
  cache in the other tests of the run. Same values up to float rounding."""
  return jax.jit(lambda k: model_fns.init_variables(model, k, tuple(image_shape)))(key)
