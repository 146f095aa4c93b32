"""PGD throughput: image-steps per second of the configured attack, model and batch."""

import statistics
import time

import jax
import numpy as np

from robust_jax import attacks
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import rng
from jax.sharding import PartitionSpec as P


def run(config, model, image_shape, mesh):
  """Times the attack on random data; returns a JSON-able dict.

  img_steps_per_s = batch * steps / median wall time of one attack call (after warm-up);
  compile_s is the time of lowering and compiling, reported separately.
  """
  b = config.benchmark
  variables = model_fns.init_variables(model, rng.root_key(config.seed, rng.INIT), image_shape)
  params, stats = variables['params'], variables.get('batch_stats', {})
  attack = attacks.build(b.attack, where='benchmark.attack')

  def per_device(params, stats, x, y, key):
    fn = model_fns.logits_fn(model, params, stats, config.model.attack_bn_mode)
    return attack(fn, x, y, jax.random.fold_in(key, jax.lax.axis_index(parallel.AXIS)))

  fn = jax.jit(parallel.per_device(per_device, mesh, (P(), P(), P('data'), P('data'), P()),
                                   P('data')))
  data_rng = np.random.default_rng(config.seed)
  x = data_rng.uniform(size=(b.batch_size,) + tuple(image_shape)).astype(np.float32)
  y = data_rng.integers(0, 10, size=(b.batch_size,)).astype(np.int32)
  params, stats = parallel.replicate((params, stats), mesh)
  batch = parallel.shard_batch({'x': x, 'y': y}, mesh)
  key = jax.random.key(config.seed)
  t0 = time.perf_counter()
  compiled = fn.lower(params, stats, batch['x'], batch['y'], key).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(b.warmup):
    jax.block_until_ready(compiled(params, stats, batch['x'], batch['y'], key))
  times = []
  for i in range(b.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, stats, batch['x'], batch['y'],
                                   jax.random.fold_in(key, i)))
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  steps = b.attack.steps * b.attack.restarts
  return {
      'model': config.model.name, 'batch_size': b.batch_size, 'attack': attacks.describe(
          b.attack), 'steps': steps, 'devices': mesh.devices.size,
      'platform': jax.devices()[0].platform, 'img_steps_per_s': b.batch_size * steps / median,
      'compile_s': compile_s, 'median_s': median, 'times_s': times}
