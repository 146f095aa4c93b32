"""The evaluation loop (robust_jax/eval/loop.py): every example once, in fixed-shape batches,
padded and dropped again, sharded or not; the store that lets a killed evaluation resume is
tested with the evaluators (test_evaluate.py, test_detection.py)."""

import jax.numpy as jnp
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


@pytest.mark.parametrize('n, b, buckets', [(23, 8, (3,)), (40, 16, (4,)), (5, 8, (2,)), (9, 4, ())])
def test_buckets_cover_each_example_once_in_the_fixed_sizes(n, b, buckets):
  sizes, total = [], 0
  for start, valid, rows in loop.batches(np.arange(n), b, buckets=buckets):
    assert len(rows) in (b, *buckets)
    np.testing.assert_array_equal(rows[:valid], np.arange(start, start + valid))
    assert start == total
    total += valid
    sizes.append(len(rows))
  assert total == n
  padding = sum(sizes) - n  # below the smallest size, or at most a quarter of the last batch
  assert padding < (min(buckets) if buckets else b) or padding * loop.PAD_FRACTION <= sizes[-1]
  assert loop.bucket_sizes(500) == (500, loop.MIN_BUCKET)
  assert loop.bucket_sizes(8) == (8,)
  assert loop.bucket_sizes(504, 3) == (504, 66)  # a multiple of the devices


def test_a_subset_shorter_than_a_batch_runs_as_one_padded_batch_of_its_own_size():
  assert loop.bucket_sizes(500, n=331) == (500, 336, 64)  # rounded up to ROW_GRANULE = 8
  assert loop.bucket_sizes(500, n=336) == (500, 336, 64)
  assert loop.bucket_sizes(500, n=1000) == (500, 64)   # whole batches: no third size
  assert loop.bucket_sizes(500, n=1100) == (500, 104, 64)
  assert loop.bucket_sizes(500, n=40) == (500, 64)     # never below MIN_BUCKET
  assert loop.bucket_sizes(500, n=499) == (500, 64)
  assert loop.bucket_sizes(504, 3, n=100) == (504, 108, 66)  # multiples of 9 = 8 rounded to 3
  sizes = lambda n, buckets: [(len(r), v) for _, v, r in loop.batches(np.arange(n), 500,
                                                                      buckets=buckets)]
  assert sizes(331, (336, 64)) == [(336, 331)]   # 5 rows of padding (< 1/4): one batch
  # Most of the subset settled (a later stage): 64-row batches, not 336 rows for 250.
  assert sizes(250, (336, 64)) == [(64, 64), (64, 64), (64, 64), (64, 58)]
  assert sizes(1100, (128, 64)) == [(500, 500), (500, 500), (128, 100)]


@pytest.mark.parametrize('b, buckets', [(8, ()), (6, (2,)), (32, ())])
def test_run_staged_runs_each_stage_on_the_unsettled_examples_only(b, buckets):
  # Example i settles after stage need[i] (0: at the start); its carry counts the stages it ran
  # and its output is that of the last one. A stage seen by a settled example, a skipped stage
  # or outputs taken from the wrong call all change `ran` or `out`.
  n, num_stages = 21, 4
  need = np.arange(n) % (num_stages + 2)  # num_stages + 1: never settles
  calls = []

  def step(batch, s):
    calls.append((s, np.asarray(batch['i'])))
    ran = np.where(s == 0, 0, batch['carry0'] + 1)
    return ran, ran >= need[batch['i']], ran * 10 + batch['i']

  out = loop.run_staged(step, num_stages, {'i': np.arange(n)}, np.arange(n), b, [(np.int32, ())],
                        {'out': np.int64}, buckets=buckets)
  runs = np.minimum(need, num_stages)
  np.testing.assert_array_equal(out['out'], runs * 10 + np.arange(n))
  for s, rows in calls:
    if s > 0:
      assert np.all((need[rows] >= s) | (rows == 0))  # unsettled rows (row 0 pads batches)


def test_rows_left_run_below_64_rows_only_where_the_model_allows():
  yes, no = (lambda size: True), (lambda size: False)
  assert loop.bucket_sizes(500, n=46, small_ok=yes) == (500, 64, 48)
  assert loop.bucket_sizes(500, n=46, small_ok=no) == (500, 64)
  assert loop.bucket_sizes(500, n=46) == (500, 64)
  assert loop.bucket_sizes(500, n=331, small_ok=yes) == (500, 336, 64)  # >= 64: not asked
  asked = []
  loop.bucket_sizes(500, n=1046, small_ok=lambda size: asked.append(size) or True)
  assert asked == [48]


def test_batch_invariance_sees_a_model_whose_rows_depend_on_the_batch():
  x = jnp.asarray(np.random.RandomState(0).rand(loop.MIN_BUCKET, 4, 4, 1), jnp.float32)
  w = jnp.asarray(np.random.RandomState(1).randn(16, 10), jnp.float32)
  per_example = lambda v: lambda a: jnp.tanh(a.reshape(a.shape[0], -1) @ v)
  ok = loop.batch_invariance(per_example, w, x)
  assert ok(8) and ok(48)
  # The batch's mean leaks into every row (as BatchNorm in training mode would).
  leaky = lambda v: lambda a: per_example(v)(a) + jnp.mean(a)
  assert not loop.batch_invariance(leaky, w, x)(8)
