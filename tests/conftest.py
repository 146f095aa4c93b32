"""Tests run on 4 fake CPU devices, so data-parallel code is exercised on any machine.

XLA's CPU backend spends seconds optimising each conv net; unit tests need correctness only, so
they compile with backend optimisation off. End-to-end runs in subprocesses get `SUBPROCESS_ENV`,
which keeps the fake devices but compiles normally.
"""

import os

FAKE_DEVICES = '--xla_force_host_platform_device_count=4'
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'

SUBPROCESS_ENV = {**os.environ, 'XLA_FLAGS': FAKE_DEVICES, 'JAX_PLATFORMS': 'cpu'}
os.environ['XLA_FLAGS'] = f'{FAKE_DEVICES} {FAST_COMPILE}'
os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 4)
