"""Data parallelism: a 1-D `'data'` mesh over all devices, per-device code under `jax.shard_map`.

Per-device functions see their shard of the batch and use explicit collectives
(`lax.pmean(g, 'data')`) exactly as under `pmap`; on several hosts the same code runs on the
global mesh after `jax.distributed.initialize`.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'data'


def make_mesh(devices=None):
  """A 1-D mesh named 'data' over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh):
  return NamedSharding(mesh, P(AXIS))


def replicate(tree, mesh):
  """Places a pytree (params, optimizer state) on every device of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(local_batch, mesh):
  """Assembles a global batch, split along axis 0, from this host's part of it.

  Args:
    local_batch: pytree of numpy arrays holding this process's rows of the global batch
      (all rows on one host).
    mesh: the data mesh.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), local_batch)


def per_device(fn, mesh, in_specs, out_specs):
  """`shard_map` of a per-device function over the data axis (specs: P() or P('data'))."""
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def global_positions(local_batch_size):
  """int32[local_B]: each local example's row in the global batch (inside `per_device` code)."""
  start = jax.lax.axis_index(AXIS) * local_batch_size
  return start + jnp.arange(local_batch_size, dtype=jnp.int32)


def check_divisible(batch_size, mesh, what):
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(f'{what}={batch_size} is not divisible by the {n} devices of the data mesh; '
                     f'use a multiple of {n}.')
