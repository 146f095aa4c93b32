"""robust_jax/compile_cache.py: which directory launch.py's --compile_cache picks, that a
configured one wins, that a bad one does not stop the run, and that a second process reads the
compiled programs back (its programs are cache hits and give the same bits)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from tests import conftest
from robust_jax import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_choose_follows_the_flag_and_the_mode(tmp_path, monkeypatch):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert compile_cache.choose('auto', 'eval') == str(tmp_path / 'robust_jax' / 'xla')
  assert compile_cache.choose('auto', 'train_and_eval') == compile_cache.default_dir()
  assert compile_cache.choose('auto', 'benchmark') is None  # cold compile times by default
  for off in ('off', '', 'none', None):
    assert compile_cache.choose(off, 'eval') is None
  assert compile_cache.choose(str(tmp_path / 'c'), 'benchmark') == str(tmp_path / 'c')


def test_a_configured_directory_wins(tmp_path):
  # conftest configured the test session's cache before any compile, as
  # JAX_COMPILATION_CACHE_DIR would: the flag's directory is not taken.
  assert compile_cache.enable(str(tmp_path / 'elsewhere')) == conftest.COMPILE_CACHE
  assert jax.config.jax_compilation_cache_dir == conftest.COMPILE_CACHE


def test_a_directory_that_cannot_be_made_leaves_the_cache_off(tmp_path, monkeypatch):
  monkeypatch.setattr(compile_cache, 'in_use', lambda: None)
  updates = []
  monkeypatch.setattr(jax.config, 'update', lambda *a: updates.append(a))
  (tmp_path / 'file').write_text('x')
  assert compile_cache.enable(str(tmp_path / 'file' / 'cache')) is None
  assert not updates
  assert compile_cache.enable(None) is None
  assert compile_cache.enable(str(tmp_path / 'ok')) == str(tmp_path / 'ok')
  assert updates[0] == ('jax_compilation_cache_dir', str(tmp_path / 'ok'))


_CHILD = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from robust_jax import compile_cache
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith('cache_hits') else None)
used = compile_cache.enable(sys.argv[1], min_compile_s=0)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(0))
out = np.asarray(f(jnp.arange(64.0).reshape(8, 8) / 64))
print(json.dumps({'used': used, 'hits': len(hits), 'out': out.tolist()}))
"""


def test_a_second_process_reads_the_compiled_programs_back(tmp_path):
  env = {k: v for k, v in conftest.SUBPROCESS_ENV.items()
         if not k.startswith('JAX_PERSISTENT_CACHE') and k != 'JAX_COMPILATION_CACHE_DIR'}
  env['PYTHONPATH'] = ROOT
  cache = str(tmp_path / 'cache')
  runs = []
  for _ in range(2):
    r = subprocess.run([sys.executable, '-c', _CHILD, cache], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
  assert runs[0]['used'] == runs[1]['used'] == cache
  assert runs[0]['hits'] == 0 and os.listdir(cache)  # compiled, then written
  assert runs[1]['hits'] >= 1                         # read back, not compiled
  np.testing.assert_array_equal(runs[0]['out'], runs[1]['out'])
