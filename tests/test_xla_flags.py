"""robust_jax.xla_flags: the XLA:CPU settings added at import, and that this jaxlib accepts them."""

import os
import subprocess
import sys

import jaxlib

from robust_jax import xla_flags
from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wanted_keeps_the_users_value_and_checks_the_version():
  flag = xla_flags.FLAGS[0]
  assert xla_flags.wanted('', '0.10.2') == [flag]
  assert xla_flags.wanted(f'--foo {flag.split("=")[0]}=bar', '0.10.2') == []  # the user's wins
  assert xla_flags.wanted('', '9.0.0') == []  # a jaxlib these flags were not checked on


def test_imported_robust_jax_set_the_flags_and_xla_accepts_them():
  code = ('import os, robust_jax, jax; jax.numpy.ones(2).block_until_ready(); '
          'print(os.environ.get("XLA_FLAGS", ""))')
  env = {**conftest.SUBPROCESS_ENV}
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]  # an unknown flag would abort XLA
  if any(jaxlib.version.__version__.startswith(v) for v in xla_flags.CHECKED_JAXLIB):
    assert all(f in out.stdout for f in xla_flags.FLAGS), out.stdout
  off = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       env={**env, xla_flags.ENV_SWITCH: '0'}, timeout=120)
  assert off.returncode == 0 and not any(f in off.stdout for f in xla_flags.FLAGS)
