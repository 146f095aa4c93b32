"""Training metrics: `WORKDIR/metrics.jsonl` (one JSON line per logged step) and TensorBoard events.

On resume from step s, lines logged after s are dropped first, so the file never holds a step twice.
"""

import json
import os

import jax


class MetricsLog:

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
