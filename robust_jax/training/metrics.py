"""Training metrics: checked for divergence, then `WORKDIR/metrics.jsonl` and TensorBoard.

    log = metrics.StepLog(workdir, start, total, steps_per_epoch, schedule, replays, progress)
    log.add(step, step_metrics)   # device metrics, kept until the next flush
    log.flush()                   # checked (FloatingPointError naming the first non-finite
                                  # one), then one JSON line per step, TensorBoard and the bar
    seconds = metrics.train_seconds(workdir)

On resume from step s, lines logged after s are dropped first, so the file never holds a step
twice.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import tqdm


def finite_or_raise(step, record):
  """FloatingPointError naming the first non-finite float of `record`."""
  for name, value in record.items():
    if isinstance(value, float) and not jnp.isfinite(value):
      raise FloatingPointError(
          f'Training diverged: {name}={value} at step {step}. The last good checkpoint is kept '
          'in WORKDIR/checkpoints; lower optim.learning_rate or set optim.grad_clip_norm and '
          'rerun.')


class MetricsLog:
  """WORKDIR/metrics.jsonl (one JSON line per logged step) and TensorBoard events."""

  def __init__(self, workdir, resume_step):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._writer_enabled = jax.process_index() == 0
    self._tb = None
    if not self._writer_enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      self._truncate_after(resume_step)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def _truncate_after(self, step):
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut short by a kill
        if record.get('step', 0) <= step:
          kept.append(json.dumps(record))
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.write(''.join(line + '\n' for line in kept))
    os.replace(tmp, self.path)

  def write(self, step, record):
    if not self._writer_enabled:
      return
    record = {'step': int(step), **record}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for name, value in record.items():
      if name != 'step' and isinstance(value, (int, float)):
        self._tb.add_scalar(f'train/{name}', value, step)

  def close(self):
    if self._tb is not None:
      self._tb.close()


class StepLog:
  """Step metrics -> records checked for divergence -> metrics.jsonl, TensorBoard, the bar."""

  def __init__(self, workdir, start, total, spe, schedule, replays, progress):
    self._log = MetricsLog(workdir, start)
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
