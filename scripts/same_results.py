"""Checks that two revisions of robust_jax give the same results, bit for bit.

    python scripts/same_results.py --base=main --head=HEAD -- --config.train.steps=30

runs `launch.py` with the same flags (after `--`) in a temporary worktree of each revision, one
after the other on this machine, and compares the two results.json files: every figure (clean,
each attack, the worst case, the suite, the sanity checks, eps curve, detection, certification,
monitor) must be equal; times, versions and the machine are left out. Exit status 0 when equal,
1 with the differing keys listed otherwise. This is the evidence a refactoring's commit message
names in its `Results-unchanged:` trailer (robust_jax/zoo.py, CodeCheck).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Keys whose values describe the run, not its results.
VOLATILE = {'code_version', 'source_digest', 'finished_at', 'machine', 'jax_version', 'config'}
DEFAULT_FLAGS = ['--config.train.steps=30', '--config.eval.num_examples=200',
                 '--config.eval.sanity_examples=100']


def _volatile(key):
  return key in VOLATILE or 'seconds' in key or key.endswith('_time') or key == 'time'


def differences(a, b, path=''):
  """The paths at which results `a` and `b` differ (NaN equals NaN), volatile keys left out."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      if _volatile(k):
        continue
      if k not in a or k not in b:
        out.append(f'{path}/{k}: only in {"head" if k in b else "base"}')
      else:
        out += differences(a[k], b[k], f'{path}/{k}')
    return out
  if isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      return [f'{path}: {len(a)} items against {len(b)}']
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f'{path}[{i}]')]
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
    return []
  return [] if a == b else [f'{path}: {a!r} against {b!r}']


def run(rev, flags, tmp, python):
  tree = os.path.join(tmp, rev.replace('/', '_'))
  subprocess.run(['git', 'worktree', 'add', '-q', '--detach', tree, rev], cwd=ROOT, check=True)
  try:
    data = os.path.join(ROOT, 'workdirs')
    if os.path.isdir(data):  # prepared datasets or teachers that flags may name
      os.symlink(data, os.path.join(tree, 'workdirs'))
    wd = os.path.join(tmp, 'wd_' + os.path.basename(tree))
    p = subprocess.run([python, 'launch.py', f'--workdir={wd}', '--progress=false', *flags],
                       cwd=tree, capture_output=True, text=True)
    if p.returncode:
      sys.exit(f'same_results: {rev} failed (exit {p.returncode}):\n{p.stderr[-3000:]}')
    with open(os.path.join(wd, 'results.json')) as f:
      return json.load(f)
  finally:
    subprocess.run(['git', 'worktree', 'remove', '--force', tree], cwd=ROOT)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--base', default='main', help='the revision before')
  p.add_argument('--head', default='HEAD', help='the revision after')
  p.add_argument('flags', nargs='*', help=f'launch.py flags (default: {" ".join(DEFAULT_FLAGS)})')
  a = p.parse_args(argv)
  flags = a.flags or DEFAULT_FLAGS
  with tempfile.TemporaryDirectory(prefix='same_results_') as tmp:
    base = run(a.base, flags, tmp, sys.executable)
    head = run(a.head, flags, tmp, sys.executable)
  diff = differences(base, head)
  summary = (f'clean {base["clean_accuracy"]}, worst case {base["worst_case_accuracy"]}, '
             f'{len(base.get("attacks", {}))} attacks, {len(base.get("sanity_checks", []))} '
             f'sanity checks')
  if diff:
    print(f'DIFFERENT: {a.base} and {a.head} with {" ".join(flags)}:')
    print('\n'.join('  ' + d for d in diff))
    return 1
  print(f'SAME: {a.base} and {a.head} give identical results with {" ".join(flags)} '
        f'({summary}).')
  return 0


if __name__ == '__main__':
  sys.exit(main())
