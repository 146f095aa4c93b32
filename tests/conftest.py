"""Tests run on 4 fake CPU devices, so data-parallel code is exercised on any machine.

XLA's CPU backend spends seconds optimising each conv net; unit tests need correctness only, so
they compile with backend optimisation off. launch.py runs in subprocesses get `subprocess_env`:
fake devices, and backend optimisation off too unless the run trains for real.

Compiling is most of the suite's time, and many tests compile the same programs (a fresh `jax.jit`
of the same evaluation step is a new in-memory cache entry): one JAX persistent compilation cache
per test run, shared by the pytest-xdist workers, the in-process tests and the subprocesses,
compiles each program once. The pytest process that loads this file first (xdist's controller)
creates it and passes it on in the environment; it removes it at the end.
"""

import os
import shutil
import tempfile

FAKE_DEVICES = '--xla_force_host_platform_device_count=4'
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
# ROBUST_JAX_TEST_PLATFORM=gpu (or tpu) runs the in-process tests on the machine's accelerator
# instead, to check the accelerator path; tests marked `multidevice` then need enough devices.
PLATFORM = os.environ.get('ROBUST_JAX_TEST_PLATFORM', 'cpu')

_CACHE_VAR = 'ROBUST_JAX_TEST_JIT_CACHE'
_OWNS_CACHE = _CACHE_VAR not in os.environ
if _OWNS_CACHE:
  os.environ[_CACHE_VAR] = tempfile.mkdtemp(prefix='robust_jax_test_jit_cache_')
COMPILE_CACHE = os.environ[_CACHE_VAR]
CACHE_MIN_COMPILE_S = 0.2  # smaller programs compile faster than they load
SUBPROCESS_ENV = {**os.environ, 'XLA_FLAGS': FAKE_DEVICES, 'JAX_PLATFORMS': 'cpu',
                  'JAX_COMPILATION_CACHE_DIR': COMPILE_CACHE,
                  'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': str(CACHE_MIN_COMPILE_S)}
if PLATFORM == 'cpu':
  os.environ['XLA_FLAGS'] = f'{FAKE_DEVICES} {FAST_COMPILE}'
os.environ['JAX_PLATFORMS'] = PLATFORM

import jax  # noqa: E402
import pytest  # noqa: E402

if PLATFORM == 'cpu':
  jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_compilation_cache_dir', COMPILE_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', CACHE_MIN_COMPILE_S)


def subprocess_env(devices=4, fast_compile=True, **extra):
  """SUBPROCESS_ENV for a launch.py child on `devices` fake CPU devices. `fast_compile`: XLA's
  backend optimisation off, as in-process tests compile; runs that train for real pass False.
  `extra`: more variables (e.g. TFDS_DATA_DIR)."""
  flags = f'--xla_force_host_platform_device_count={devices}'
  return dict(SUBPROCESS_ENV, XLA_FLAGS=f'{flags} {FAST_COMPILE}' if fast_compile else flags,
              **extra)


def pytest_sessionfinish(session, exitstatus):
  del exitstatus
  if _OWNS_CACHE and not hasattr(session.config, 'workerinput'):  # not an xdist worker
    shutil.rmtree(COMPILE_CACHE, ignore_errors=True)


def pytest_runtest_setup(item):
  if item.get_closest_marker('multidevice') and len(jax.devices()) < 4:
    pytest.skip(f'needs 4 devices; {PLATFORM} has {len(jax.devices())}')


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """One TFDS data_dir for every end-to-end test of the run: the first launch prepares
  Fashion-MNIST there (~10 s), the others read it."""
  return tmp_path_factory.mktemp('tfds')
