"""Tests run on 4 fake CPU devices, so data-parallel code is exercised on any machine.

XLA's CPU backend spends seconds optimising each conv net; unit tests need correctness only, so
they compile with backend optimisation off. End-to-end runs in subprocesses get `SUBPROCESS_ENV`,
which keeps the fake devices but compiles normally.
"""

import os
import shutil
import tempfile

FAKE_DEVICES = '--xla_force_host_platform_device_count=4'
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
# ROBUST_JAX_TEST_PLATFORM=gpu (or tpu) runs the in-process tests on the machine's accelerator
# instead, to check the accelerator path; tests marked `multidevice` then need enough devices.
PLATFORM = os.environ.get('ROBUST_JAX_TEST_PLATFORM', 'cpu')

# Subprocesses (launch.py end to end) share one JAX persistent compilation cache per test run:
# the same programs (model, attack, shapes) compile once, not in every test that launches them.
COMPILE_CACHE = tempfile.mkdtemp(prefix='robust_jax_test_jit_cache_')
SUBPROCESS_ENV = {**os.environ, 'XLA_FLAGS': FAKE_DEVICES, 'JAX_PLATFORMS': 'cpu',
                  'JAX_COMPILATION_CACHE_DIR': COMPILE_CACHE,
                  'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.2'}
if PLATFORM == 'cpu':
  os.environ['XLA_FLAGS'] = f'{FAKE_DEVICES} {FAST_COMPILE}'
os.environ['JAX_PLATFORMS'] = PLATFORM

import jax  # noqa: E402
import pytest  # noqa: E402

if PLATFORM == 'cpu':
  jax.config.update('jax_num_cpu_devices', 4)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(COMPILE_CACHE, ignore_errors=True)


def pytest_runtest_setup(item):
  if item.get_closest_marker('multidevice') and len(jax.devices()) < 4:
    pytest.skip(f'needs 4 devices; {PLATFORM} has {len(jax.devices())}')


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """One TFDS data_dir for every end-to-end test of the run: the first launch prepares
  Fashion-MNIST there (~10 s), the others read it."""
  return tmp_path_factory.mktemp('tfds')
