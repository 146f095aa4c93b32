"""JAX's persistent compilation cache, on by default for launch.py's runs (--compile_cache).

A robust evaluation compiles one program per attack and batch shape (1-2 s each for a small CNN
on a CPU, several seconds for a ResNet): a sizeable part of an AutoAttack run on a model that
falls quickly, and all of it again in every new process (`--mode=eval` after training, each row
of a paper table, each seed, each checkpoint of a sweep). With the cache, a program compiled once
for the same model code, shapes, devices, jax/jaxlib version and XLA flags is read back from disk
instead (the weights are arguments of the programs, not part of them, so another checkpoint of
the same architecture hits too). Results are the same bits: the cached program is the compiled
one (BENCHMARKS.md measures the time it saves).

    dir_in_use = compile_cache.enable(compile_cache.choose('auto', mode='eval'))

The cache is JAX's own (`jax_compilation_cache_dir`): a directory of compiled executables that
JAX trusts, so it must not be writable by other users (the default is under the user's own
~/.cache). `JAX_COMPILATION_CACHE_DIR` in the environment, or a directory already set in
jax.config, wins over the flag. `--mode=benchmark` leaves it off unless a path is given, so that
compile times are cold ones; its JSON records the directory in use.
"""

import os

import jax
from absl import logging

MIN_COMPILE_S = 0.2  # programs that compile faster than this are not written (JAX's default: 1 s)


def default_dir():
  """~/.cache/robust_jax/xla ($XDG_CACHE_HOME when set)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'robust_jax', 'xla')


def choose(flag, mode):
  """The directory launch.py's --compile_cache=`flag` asks for in `mode`, or None for off:
  'auto' -> default_dir() (None for mode 'benchmark'), '' or 'off' -> None, else the path."""
  flag = (flag or '').strip()
  if flag.lower() in ('', 'off', 'none', 'false', '0'):
    return None
  if flag == 'auto':
    return None if mode == 'benchmark' else default_dir()
  return os.path.abspath(os.path.expanduser(flag))


def in_use():
  """The persistent cache directory JAX will use (None: no persistent cache)."""
  return jax.config.jax_compilation_cache_dir or None


def enable(path, min_compile_s=MIN_COMPILE_S):
  """Turns JAX's persistent compilation cache on at `path` (None: leaves it as it is), unless a
  directory is already configured (JAX_COMPILATION_CACHE_DIR, jax.config), which wins. Call it
  before the first compile. A directory that cannot be created is reported and the run goes on
  without a cache. Returns the directory in use, or None."""
  if in_use() or path is None:
    return in_use()
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    logging.warning('Compilation cache off: cannot create %s (%s); pass --compile_cache=DIR '
                    'with a writable directory, or --compile_cache=off.', path, e)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', float(min_compile_s))
  return path
