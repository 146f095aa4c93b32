"""The data mesh: global batches from host rows, positions, replication."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from robust_jax import parallel


@pytest.mark.multidevice
def test_shard_batch_splits_rows_over_devices_in_order():
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 4 and mesh.axis_names == ('data',)
  x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
  batch = parallel.shard_batch({'x': x}, mesh)
  np.testing.assert_array_equal(np.asarray(batch['x']), x)
  assert [s.data.shape for s in batch['x'].addressable_shards] == [(2, 3)] * 4


def test_per_device_code_sees_its_shard_and_global_positions():
  mesh = parallel.make_mesh()

  def per_device(x):
    pos = parallel.global_positions(x.shape[0])
    total = jax.lax.psum(jnp.sum(x), parallel.AXIS)
    return pos, jnp.broadcast_to(total, x.shape[:1])

  fn = jax.jit(parallel.per_device(per_device, mesh, (P('data'),), (P('data'), P('data'))))
  pos, total = fn(parallel.shard_batch(np.ones((8,), np.float32), mesh))
  np.testing.assert_array_equal(np.asarray(pos), np.arange(8))
  np.testing.assert_array_equal(np.asarray(total), np.full(8, 8.0))


@pytest.mark.multidevice
def test_replicate_puts_a_full_copy_on_every_device():
  mesh = parallel.make_mesh()
  tree = parallel.replicate({'w': np.ones((3, 2), np.float32)}, mesh)
  assert len(tree['w'].addressable_shards) == 4
  assert all(s.data.shape == (3, 2) for s in tree['w'].addressable_shards)
