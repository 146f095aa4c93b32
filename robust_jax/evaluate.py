"""Robust evaluation: clean accuracy, accuracy under each attack, and the per-example worst case.

Every test example is counted exactly once (the last batch is padded and masked); accuracies are
sums of correct counts divided by the number of examples, never averages of batch averages.
Each example's attack randomness is a function of (seed, attack, example index), so results do not
depend on the batch size or the number of devices.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import PartitionSpec as P

from robust_jax import attacks
from robust_jax import data as data_lib
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import rng
from jax.experimental import multihost_utils


def make_eval_fn(model, attack_cfg, bn_mode, mesh):
  """Jitted `fn(params, batch_stats, images, labels, index, key) -> correct: bool[B]`.

  `attack_cfg` None means clean accuracy. `index: int32[B]` is each example's test-set index.
  """
  attack = None if attack_cfg is None else attacks.build(attack_cfg)

  def per_device(params, batch_stats, images, labels, index, key):
    x = images.astype(jnp.float32) / 255.0
    if attack is not None:
      keys = rng.example_keys(key, rng.ATTACK, index)
      x = attack(model_fns.logits_fn(model, params, batch_stats, bn_mode), x, labels, keys)
    logits = model_fns.logits_fn(model, params, batch_stats, 'eval')(x)
    return jnp.argmax(logits, -1) == labels

  mapped = parallel.per_device(
      per_device, mesh, in_specs=(P(), P(), P('data'), P('data'), P('data'), P()),
      out_specs=P('data'))
  return jax.jit(mapped)


def _eval_set(dataset, num_examples):
  n = len(dataset.test_labels) if num_examples <= 0 else min(num_examples,
                                                             len(dataset.test_labels))
  return dataset.test_images[:n], dataset.test_labels[:n]


def evaluate(model, params, batch_stats, dataset, config, mesh, progress=True):
  """Returns the results dict (without config/version) for `config.eval`.

  Keys: num_examples, clean_accuracy, attacks {name: {accuracy, correct, metric, ...spec}},
  worst_case_accuracy, worst_case_correct, eval_seconds.
  """
  images, labels = _eval_set(dataset, config.eval.num_examples)
  n = len(labels)
  bs = config.eval.batch_size
  named = [('clean', None)] + [(k, dict(v)) for k, v in config.eval.attacks.items()]
  key = rng.root_key(config.seed, rng.EVAL)
  host_rows = data_lib.host_slice(bs, jax.process_index(), jax.process_count())
  correct = {name: np.zeros(n, bool) for name, _ in named}
  num_batches = -(-n // bs)
  bar = tqdm.tqdm(total=num_batches * len(named), desc='eval', unit='batch', dynamic_ncols=True,
                  disable=not progress or jax.process_index() != 0, mininterval=2.0)
  timings = {}
  start_all = time.perf_counter()
  for a_i, (name, cfg) in enumerate(named):
    fn = make_eval_fn(model, cfg, config.model.attack_bn_mode, mesh)
    a_key = jax.random.fold_in(key, a_i)
    t0 = time.perf_counter()
    bar.set_description(f'eval {name}')
    offset = 0
    for x, y, mask in data_lib.eval_batches(images, labels, bs):
      index = (offset + np.arange(bs)).astype(np.int32)
      batch = parallel.shard_batch({'x': x[host_rows], 'y': y[host_rows],
                                    'i': index[host_rows]}, mesh)
      ok = multihost_utils.process_allgather(
          fn(params, batch_stats, batch['x'], batch['y'], batch['i'], a_key), tiled=True)
      valid = int(mask.sum())
      correct[name][offset:offset + valid] = ok[:valid]
      offset += valid
      bar.update(1)
    timings[name] = time.perf_counter() - t0
  bar.close()
  worst = np.logical_and.reduce([correct[name] for name, _ in named])
  results = {
      'num_examples': n,
      'clean_accuracy': float(correct['clean'].mean()),
      'attacks': {},
      'worst_case_accuracy': float(worst.mean()),
      'worst_case_correct': int(worst.sum()),
      'eval_seconds': time.perf_counter() - start_all,
  }
  for name, cfg in named[1:]:
    spec = attacks.validate(cfg, f'eval.attacks.{name}')
    results['attacks'][name] = {
        'accuracy': float(correct[name].mean()), 'correct': int(correct[name].sum()),
        'metric': attacks.describe(cfg), 'seconds': timings[name], **spec}
  return results
