"""The evaluation loop (robust_jax/eval/loop.py): every example once, in fixed-shape batches,
padded and dropped again, sharded or not; the store that lets a killed evaluation resume is
tested with the evaluators (test_evaluate.py, test_detection.py)."""

import numpy as np
import pytest

from robust_jax import parallel
from robust_jax.eval import loop


@pytest.mark.parametrize('n, b', [(1, 4), (7, 7), (23, 5), (40, 8), (10, 16)])
def test_the_loop_covers_each_example_once(n, b):
  images = np.arange(n * 2, dtype=np.uint8).reshape(n, 2, 1, 1) + 1
  labels = (np.arange(n) % 10).astype(np.int32)
  seen = []

  def fn(batch):
    x, y = batch['x'], batch['y']
    assert x.shape == (b, 2, 1, 1) and x.dtype == np.uint8
    assert y.shape == (b,) and y.dtype == np.int32
    seen.append(len(y))
    return x, y

  out = loop.run(fn, {'x': images, 'y': labels}, np.arange(n), b,
                 {'x': (np.uint8, (2, 1, 1)), 'y': np.int32})
  assert len(seen) == -(-n // b)
  np.testing.assert_array_equal(out['x'], images)
  np.testing.assert_array_equal(out['y'], labels)
  total = 0
  for start, valid, rows in loop.batches(np.arange(n), b):
    assert rows.shape == (b,)
    np.testing.assert_array_equal(rows[:valid], np.arange(start, start + valid))  # real first
    assert not rows[valid:].any()  # padded with row 0
    total += valid
  assert total == n


def test_a_subset_runs_sharded_in_its_own_order_and_padding_is_dropped():
  mesh = parallel.make_mesh()
  b = 2 * mesh.devices.size
  values = np.arange(100, 123, dtype=np.float32)
  subset = np.array([20, 3, 7, 0, 11, 5, 9, 21, 2, 14, 13])
  out = loop.run(lambda batch: (batch['v'] * 2, batch['v'] >= 110), {'v': values}, subset, b,
                 {'double': np.float32, 'big': np.bool_}, mesh=mesh)
  np.testing.assert_array_equal(out['double'], values[subset] * 2)
  np.testing.assert_array_equal(out['big'], values[subset] >= 110)
  # Explicit padding rows: the last batch is filled with them, not with row 0.
  used = []
  loop.run(lambda batch: (used.append(np.asarray(batch['v'])) or batch['v'],), {'v': values},
           np.arange(5), 4, {'v': np.float32}, pad_rows=np.array([22, 21, 20]))
  np.testing.assert_array_equal(used[-1], values[[4, 22, 21, 20]])
