"""Multi-host start-up: `jax.distributed.initialize` from flags or the cluster's environment.

    python launch.py --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0 ...

Every process runs the same command with its own `--process_id`. Where the flags are absent the
usual variables are read: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; and under
SLURM (SLURM_NTASKS > 1), Open MPI or on a TPU pod, JAX detects the cluster itself
(`--distributed=auto`). After initialisation `jax.devices()` lists every host's devices: the data
mesh spans them all, each host feeds its own rows of every global batch, and only process 0
writes results, metrics and checkpoint metadata.

On CPU, collectives between processes go through gloo (`jax_cpu_collectives_implementation`).
When a peer dies, the survivors' heartbeat to the coordinator fails and they exit with an error
after `heartbeat_timeout_s` instead of hanging in a collective.
"""

import os

import jax
from absl import logging

from robust_jax import errors

MODES = ('auto', 'on', 'off')


def settings(mode='auto', coordinator_address=None, num_processes=None, process_id=None):
  """The keyword arguments for `jax.distributed.initialize`, or None for a single process.

  mode 'off': single process. 'on': initialise (arguments from flags, then the JAX_* variables,
  else JAX's own cluster detection). 'auto': initialise when flags, JAX_* variables or a
  multi-task SLURM job say there are several processes.
  """
  if mode not in MODES:
    raise errors.ConfigError(f'--distributed={mode!r}; valid: {list(MODES)}.')
  if mode == 'off':
    return None
  env = os.environ
  address = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS') or None
  count = num_processes if num_processes is not None else _int_env('JAX_NUM_PROCESSES')
  pid = process_id if process_id is not None else _int_env('JAX_PROCESS_ID')
  explicit = address is not None or count is not None or pid is not None
  if explicit and (address is None or count is None or pid is None):
    raise errors.ConfigError(
        'Multi-host needs all three of --coordinator_address (host:port of process 0), '
        '--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, '
        f'JAX_PROCESS_ID); got address={address!r}, num_processes={count!r}, '
        f'process_id={pid!r}.')
  if explicit:
    if count < 1 or not 0 <= pid < count:
      raise errors.ConfigError(f'--process_id={pid} must be in [0, --num_processes={count}).')
    return dict(coordinator_address=address, num_processes=count, process_id=pid)
  if mode == 'on' or _int_env('SLURM_NTASKS', 1) > 1 or _int_env('OMPI_COMM_WORLD_SIZE', 1) > 1:
    return {}  # JAX detects SLURM, Open MPI and TPU pods itself
  return None


def _int_env(name, default=None):
  value = os.environ.get(name)
  if value in (None, ''):
    return default
  try:
    return int(value)
  except ValueError as e:
    raise errors.ConfigError(f'${name}={value!r} must be an integer.') from e


def initialize(kwargs, heartbeat_timeout_s=60, initialization_timeout_s=300):
  """Calls `jax.distributed.initialize(**kwargs)` (nothing when kwargs is None).

  Must run before anything touches a JAX backend.
  """
  if kwargs is None:
    return False
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs, initialization_timeout=initialization_timeout_s,
                             heartbeat_timeout_seconds=heartbeat_timeout_s)
  logging.info('process %d of %d: %d local / %d global devices', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True
