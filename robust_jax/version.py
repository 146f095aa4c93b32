"""What code produced a result: the git commit, and a digest of the library's source.

    version.code_version()   # 'a1b2c3...' or 'a1b2c3...+dirty' or 'unknown'
    version.source_digest()  # sha256 over robust_jax/**/*.py: changes with any code change
    version.write_stamp()    # .code_version: the commit, for a copy that travels without .git
    version.machine()        # 'AMD EPYC 7B13, avx2, 2 cores': the CPU a result came from

The commit names the code for a reader; the digest is what resumable evaluations key on, since a
'+dirty' commit does not tell one uncommitted edit from another. Imports nothing of robust_jax.
"""

import functools
import hashlib
import os
import platform
import subprocess

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


RUN_CODE = ('robust_jax', 'configs', 'launch.py')  # what a run executes (not docs or tests)


STAMP = '.code_version'  # '<commit> <run_code_digest>', for a copy that travels without .git


def code_version(root=None):
  """The git commit of this checkout, or 'unknown'; '+dirty' when the code a run executes
  (`RUN_CODE`: the library, the configs, launch.py) has uncommitted or untracked changes.

  A copy without .git (the working tree sent to a lent GPU machine) names its commit through
  the file `STAMP` that `write_stamp()` left in the checkout it came from: that commit if the run
  code's digest is still the one recorded there, else that commit '+dirty'.
  """
  root = root or os.path.dirname(_PACKAGE)
  try:
    rev = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True,
                         timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--', *RUN_CODE], cwd=root,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return rev + ('+dirty' if dirty else '')
  except (OSError, subprocess.SubprocessError):
    return _stamped(root) or 'unknown'


def run_code_digest(root=None):
  """sha256 (hex) over the relative paths and bytes of every file of `RUN_CODE` (.py files of
  the folders, launch.py) under `root` (default: this checkout)."""
  root = root or os.path.dirname(_PACKAGE)
  paths = []
  for entry in RUN_CODE:
    top = os.path.join(root, entry)
    if os.path.isfile(top):
      paths.append(top)
    for folder, dirs, files in os.walk(top):
      dirs[:] = sorted(d for d in dirs if d != '__pycache__')
      paths += [os.path.join(folder, f) for f in files if f.endswith('.py')]
  h = hashlib.sha256()
  for path in sorted(paths):
    h.update(os.path.relpath(path, root).encode() + b'\0')
    with open(path, 'rb') as f:
      h.update(f.read())
  return h.hexdigest()


def write_stamp(root=None):
  """Writes `STAMP` (this commit and the run code's digest) into the checkout `root`, for a copy
  of it that will run where there is no .git; refuses (ValueError) on uncommitted run code."""
  root = root or os.path.dirname(_PACKAGE)
  rev = code_version(root)
  if rev == 'unknown' or rev.endswith('+dirty'):
    raise ValueError(f'code version {rev!r}: commit the run code first; a stamp names a commit.')
  with open(os.path.join(root, STAMP), 'w') as f:
    f.write(f'{rev} {run_code_digest(root)}\n')
  return rev


def _stamped(root):
  try:
    with open(os.path.join(root, STAMP)) as f:
      rev, digest = f.read().split()
  except (OSError, ValueError):
    return None
  return rev if digest == run_code_digest(root) else rev + '+dirty'


@functools.lru_cache(maxsize=None)
def source_digest():
  """sha256 (hex) of every robust_jax/**/*.py file's relative path and bytes, in sorted order."""
  h = hashlib.sha256()
  for folder, dirs, files in sorted(os.walk(_PACKAGE)):
    dirs.sort()
    for name in sorted(files):
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        h.update(os.path.relpath(path, _PACKAGE).encode() + b'\0')
        with open(path, 'rb') as f:
          h.update(f.read())
  return h.hexdigest()


def _cpuinfo(path='/proc/cpuinfo'):
  """(model name, set of flags) of the first CPU in `path`; ('', set()) where unreadable."""
  model, flags = '', set()
  try:
    with open(path) as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip()
        if key == 'model name' and not model:
          model = value.strip()
        elif key == 'flags' and not flags:
          flags = set(value.split())
        if model and flags:
          break
  except OSError:
    pass
  return model, flags


@functools.lru_cache(maxsize=None)
def machine(cpuinfo='/proc/cpuinfo'):
  """The CPU that produced a result, e.g. 'AMD EPYC 7B13, avx2, 2 cores': float results can
  differ in the last bits between vector instruction sets (AVX2 against AVX-512)."""
  model, flags = _cpuinfo(cpuinfo)
  model = model or platform.processor() or platform.machine() or 'unknown CPU'
  isa = ('avx512f' if 'avx512f' in flags else 'avx2' if 'avx2' in flags else
         'neon' if 'asimd' in flags or 'neon' in flags else 'other ISA' if flags else '')
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return ', '.join(x for x in (model, isa, f'{cores} cores') if x)
