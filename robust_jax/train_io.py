"""The training loop's input and output: checkpoints (with free AT's carry) and step metrics.

    saver = train_io.Saver(workdir, config, free=False)
    state = saver.restore_or_init(state)        # the latest checkpoint, or `state`
    saver.save(step, state)
    log = train_io.StepLog(workdir, start, total, steps_per_epoch, schedule, replays, progress)
    log.add(step, metrics); log.flush()         # checked, then metrics.jsonl and TensorBoard
"""

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import tqdm

from robust_jax import checkpoint
from robust_jax import metrics_log


def finite_or_raise(step, record):
  """FloatingPointError naming the first non-finite float of `record`."""
  for name, value in record.items():
    if isinstance(value, float) and not jnp.isfinite(value):
      raise FloatingPointError(
          f'Training diverged: {name}={value} at step {step}. The last good checkpoint is kept '
          'in WORKDIR/checkpoints; lower optim.learning_rate or set optim.grad_clip_norm and '
          'rerun.')


class Saver:
  """The run's checkpoints; free AT's carried perturbation goes to WORKDIR/free_at_carry/.

  The carry of step s is saved before the state of step s, so whenever checkpoints/<s> exists
  free_at_carry/checkpoints/<s> does too, and a resume from s is exact.
  """

  def __init__(self, workdir, config, free):
    c = config.checkpoint
    self._ckpt = checkpoint.Checkpointer(workdir, c.every_steps, c.max_to_keep)
    self._carry_dir = os.path.join(workdir, 'free_at_carry') if free else None
    self._carry = None
    if free:
      latest = self._ckpt.latest_step() or 0
      steps = os.path.join(self._carry_dir, 'checkpoints')
      if jax.process_index() == 0 and os.path.isdir(steps):
        for name in os.listdir(steps):  # saved after the state we resume from: saved again
          if name.isdigit() and int(name) > latest:
            shutil.rmtree(os.path.join(steps, name))
      self._carry = checkpoint.Checkpointer(self._carry_dir, c.every_steps, c.max_to_keep)

  def latest_step(self):
    return self._ckpt.latest_step()

  def restore_or_init(self, state):
    """The latest saved state, or `state` when there is none.

    With `free`, `state` is a train.FreeTrainState: its `without_carry()` is what checkpoints
    hold, and the restored one gets the carry saved at the same step.
    """
    if self._carry is None:
      return self._ckpt.restore_or_init(state)[0]
    restored, found = self._ckpt.restore_or_init(state.without_carry())
    if not found:
      return state
    path = os.path.join(self._carry_dir, 'checkpoints', str(self._ckpt.latest_step()))
    carry, _ = checkpoint.load(path, {'carry': state.carry})
    return state.replace(**vars(restored), carry=carry['carry'])

  def save(self, step, state):
    if self._carry is not None:
      self._carry.save(step, {'carry': state.carry}, force=True)
      state = state.without_carry()
    self._ckpt.save(step, state, force=True)

  def close(self):
    self._ckpt.close()
    if self._carry is not None:
      self._carry.close()


class StepLog:
  """Step metrics -> records checked for divergence -> metrics.jsonl, TensorBoard, the bar."""

  def __init__(self, workdir, start, total, spe, schedule, replays, progress):
    self._log = metrics_log.MetricsLog(workdir, start)
    self._bar = tqdm.tqdm(total=total, initial=start, desc='train', unit='step',
                          dynamic_ncols=True, mininterval=2.0,
                          disable=not progress or jax.process_index() != 0)
    self._spe, self._schedule, self._replays = spe, schedule, replays
    self._pending, self._t_last, self._s_last = [], time.perf_counter(), start

  def add(self, step, metrics):
    self._pending.append((step, metrics))
    self._bar.update(1)

  def records(self):
    """[(step, record)] of the pending metrics, checked (FloatingPointError if not finite)."""
    if not self._pending:
      return []
    now = time.perf_counter()
    rate = (self._pending[-1][0] - self._s_last) / max(now - self._t_last, 1e-9)
    out = []
    for step, m in jax.device_get(self._pending):
      count = max(int(m['count']), 1)
      record = {'epoch': step / self._spe, 'loss': float(m['loss_sum']) / count,
                'train_accuracy': float(m['correct']) / count,
                'grad_norm': float(m['grad_norm']),
                'lr': float(self._schedule(step * self._replays - 1)), 'steps_per_s': rate}
      finite_or_raise(step, record)
      out.append((step, record))
    self._pending, self._t_last, self._s_last = [], now, out[-1][0]
    return out

  def write(self, records):
    for step, record in records:
      self._log.write(step, record)
    if records:
      r = records[-1][1]
      self._bar.set_postfix(loss=f'{r["loss"]:.3f}', acc=f'{r["train_accuracy"]:.3f}')

  def flush(self):
    self.write(self.records())

  def close(self):
    self._bar.close()
    self._log.close()


def train_seconds(workdir):
  """Seconds the logged training steps took, over every run that wrote WORKDIR/metrics.jsonl.

  The sum of 1 / steps_per_s over the file's lines (one per step, each with the rate of its
  flush), so time spent on steps that a kill lost and a resume redid is not counted twice.
  None without a metrics file (process 0 writes it).
  """
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return None
  total = 0.0
  with open(path) as f:
    for line in f:
      try:
        rate = json.loads(line).get('steps_per_s', 0)
      except json.JSONDecodeError:
        continue
      if isinstance(rate, (int, float)) and rate > 0:
        total += 1.0 / rate
  return total
