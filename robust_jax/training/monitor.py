"""Catastrophic-overfitting monitor for the training loop (Wong, Rice & Kolter 2020).

Single-step adversarial training (FGSM-RS, free AT) can overfit catastrophically: within a few
hundred steps the model's PGD accuracy collapses to about zero while its accuracy against the
training attack rises. Wong et al. detect this from PGD accuracy on training data and keep the
weights from before the collapse (early stopping). With `train.monitor_examples = N > 0`:

- the last N training images are held out: training samples only the first n - N;
- at the end of every epoch and of training, the accuracy of the weights that evaluation uses
  (EMA if on) on them, clean and under `train.monitor_attack` (whose norm and eps, unset,
  follow `train_attack`: robust_jax/defenses/training_attack.py), goes to metrics.jsonl and
  TensorBoard (`monitor_clean_accuracy`, `monitor_pgd_accuracy`, `monitor_best_pgd_accuracy`)
  and to WORKDIR/monitor.json, which keeps the whole history, the best epoch, any collapse and
  what was done about it;
- a collapse is a monitored accuracy more than `train.co_drop` below the best one so far;
  `train.co_action` says what happens: 'log' records it and training goes on; 'stop' ends
  training there with the current weights; 'rollback' ends training with the weights of the best
  epoch (kept in WORKDIR/monitor_best/ each time a new best is found); 'best' trains to the end
  and keeps the best epoch's weights there too, which evaluation then reports beside the final
  ones (results.json `early_stopping`: Rice, Wong & Kolter 2020's early stopping against robust
  overfitting, the held-out images being their validation set). The best epoch's weights are
  the run checkpointer's item 'best' (training/checkpoint.py).

A run that stopped records `stopped_at` (and `rolled_back_to`, the best epoch's step) in
monitor.json; its final checkpoint, at the step where it stopped, holds the weights it ended with
(after a rollback their `step` is the best epoch's), so evaluation and `run_io.load_model`
use them, and running the same command again does not train further. Everything here is a
function of the weights and `config.seed`, so a resumed run monitors exactly as an uninterrupted
one; on resume, records after the resumed step are dropped first.
"""

import json
import os

import jax
import numpy as np
from absl import logging

from robust_jax import attacks
from robust_jax import defenses
from robust_jax import errors
from robust_jax import rng
from robust_jax.eval import loop
from robust_jax.eval import robust

ACTIONS = ('log', 'stop', 'rollback', 'best')


def validate(config):
  """Raises ConfigError naming the first bad `config.train` monitor field."""
  t = config.train
  n = t.monitor_examples
  if not isinstance(n, int) or isinstance(n, bool) or n < 0:
    raise errors.ConfigError(
        f'train.monitor_examples={n!r} must be an integer >= 0 (0 turns the monitor off).')
  if t.co_action not in ACTIONS:
    raise errors.ConfigError(f'train.co_action={t.co_action!r}; valid: {list(ACTIONS)}.')
  drop = t.co_drop
  if not isinstance(drop, (int, float)) or isinstance(drop, bool) or not 0 < drop <= 1:
    raise errors.ConfigError(f'train.co_drop={drop!r} must be a number in (0, 1]: the drop in '
                             'monitored accuracy below the best that counts as a collapse.')
  defenses.monitor_attack(config)


def held_out(config, num_train):
  """The number of training images (the last ones) the monitor keeps out of training."""
  n = config.train.monitor_examples
  if n and num_train - n < config.train.batch_size:
    raise errors.ConfigError(
        f'train.monitor_examples={n} leaves {num_train - n} of {num_train} training images, '
        f'fewer than train.batch_size={config.train.batch_size}; hold out fewer.')
  return n


def _write_json(path, obj):
  if jax.process_index() != 0:
    return
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


class Monitor:
  """Held-out PGD accuracy each epoch; decides on collapses. See the module docstring."""

  def __init__(self, config, workdir, model, mesh, dataset, ckpt, resume_step, attack=None):
    """`ckpt`: the run's checkpoint.Checkpointer (it keeps the best epoch's weights); `attack`:
    the resolved defense's monitor_attack (None: read from the config)."""
    t = config.train
    attack = defenses.monitor_attack(config) if attack is None else attack
    n_all, self.num = len(dataset.train_labels), t.monitor_examples
    first = n_all - self.num
    self._images, self._labels = dataset.train_images[first:], dataset.train_labels[first:]
    self._index = np.arange(first, n_all, dtype=np.int32)
    d = mesh.devices.size
    self._batch = min(config.eval.batch_size, -(-self.num // d) * d)
    self._mesh = mesh
    # An evaluation: the inference-mode model is attacked and scored (loop.BN_MODE), in the
    # evaluation loop.
    self._fns = (robust.make_eval_fn(model, None, mesh),
                 robust.make_eval_fn(model, attack, mesh))
    self._key = rng.root_key(config.seed, rng.MONITOR)
    self.action, self.drop = t.co_action, float(t.co_drop)
    self._path = os.path.join(workdir, 'monitor.json')
    self._ckpt = ckpt if self.action in ('rollback', 'best') else None
    self.record = self._load(resume_step, attacks.describe(attack))

  def _load(self, resume_step, attack):
    record = {'examples': self.num, 'attack': attack, 'co_action': self.action,
              'co_drop': self.drop, 'history': [], 'best': None, 'collapses': [],
              'stopped_at': None, 'rolled_back_to': None}
    if os.path.exists(self._path):
      with open(self._path) as f:
        old = json.load(f)
      record['history'] = [h for h in old.get('history', []) if h['step'] <= resume_step]
      record['collapses'] = [c for c in old.get('collapses', []) if c['step'] <= resume_step]
      if old.get('stopped_at') is not None and old['stopped_at'] <= resume_step:
        record['stopped_at'], record['rolled_back_to'] = old['stopped_at'], old['rolled_back_to']
      for h in record['history']:
        if record['best'] is None or h['pgd_accuracy'] > record['best']['pgd_accuracy']:
          record['best'] = h
    return record

  def stopped(self):
    """Whether this workdir's run already ended early (rerunning it trains no further)."""
    return self.record['stopped_at'] is not None

  def accuracy(self, state):
    """(clean, attacked) accuracy of `state.eval_params()` on the held-out images."""
    params = state.eval_params()
    clean_fn, attack_fn = self._fns

    def both(b):  # one sharded batch, scored clean and attacked
      args = (params, state.batch_stats, b['x'], b['y'], b['i'], self._key)
      return clean_fn(*args)[0], attack_fn(*args)[0]

    out = loop.run(both, {'x': self._images, 'y': self._labels, 'i': self._index},
                   np.arange(self.num), self._batch, {'clean': np.bool_, 'attacked': np.bool_},
                   mesh=self._mesh)
    return float(out['clean'].mean()), float(out['attacked'].mean())

  def check(self, step, epoch, state):
    """Monitors `state` at `step`; returns (metrics to log, whether training must stop).

    Saves `state` as the best so far when it is (rollback and best) and writes monitor.json.
    """
    clean, robust = self.accuracy(state)
    entry = {'step': int(step), 'epoch': float(epoch), 'clean_accuracy': clean,
             'pgd_accuracy': robust}
    r = self.record
    r['history'].append(entry)
    best = r['best']
    collapsed = best is not None and best['pgd_accuracy'] - robust > self.drop
    if best is None or robust > best['pgd_accuracy']:
      r['best'] = entry
      if self._ckpt is not None:
        self._ckpt.save(step, best=state)
    metrics = {'monitor_clean_accuracy': clean, 'monitor_pgd_accuracy': robust,
               'monitor_best_pgd_accuracy': r['best']['pgd_accuracy']}
    if collapsed:
      r['collapses'].append({**entry, 'best_step': best['step'],
                             'best_pgd_accuracy': best['pgd_accuracy']})
      metrics['co_collapse'] = 1
      logging.warning('Catastrophic overfitting at step %d (epoch %.2f): monitored %s accuracy '
                      '%.3f, best %.3f at step %d; co_action=%s.', step, epoch, r['attack'],
                      robust, best['pgd_accuracy'], best['step'], self.action)
    _write_json(self._path, r)
    return metrics, collapsed and self.action in ('stop', 'rollback')

  def best_state(self, state):
    """The state saved at the best epoch (shaped like `state`), or None if none is on disk."""
    if self._ckpt is None:
      return None
    return self._ckpt.restore('best', self.record['best']['step'], like=state)

  def finish(self, stopped_at, rolled_back_to):
    """Records where training stopped early (and the step of the weights it ended with)."""
    self.record['stopped_at'], self.record['rolled_back_to'] = stopped_at, rolled_back_to
    _write_json(self._path, self.record)
