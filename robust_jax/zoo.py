r"""Deprecated: the defense zoo is the table config configs/zoo.py, run and rendered by

    python launch.py --mode=table --config=configs/zoo.py [--table_jobs=2] [--table_rows=mart]

(robust_jax/tables/, the runner of the paper tables). The old commands still work:

    python -m robust_jax.zoo run [--jobs=2] [--only=trades,mart] [--examples=1000] [--epochs=1]
                                 [--rerun_stale] [--workdirs=workdirs/zoo] [-- LAUNCH FLAGS]
    python -m robust_jax.zoo table [the same flags]
    python -m robust_jax.zoo commands [the same flags]

`run` and `table` print the launch.py command they stand for and run it (`table` with
--table_run=false); `commands` prints the launch.py command of each row. `--examples=N` is
`--config.eval.num_examples=N` (1000, the zoo's default, adds nothing), `--epochs=E` is
`--config.paper.passes=E` (E passes over the training data), `--jobs` is --table_jobs,
`--only` is --table_rows and `--workdirs` is --workdir. `--force` is gone: move a row's workdir
aside to run it again.
"""

import argparse
import os
import shlex
import subprocess
import sys

from robust_jax.tables import runner

ROOT = runner.ROOT
CONFIG = 'configs/zoo.py'
WORKDIRS = 'workdirs/zoo'
EXAMPLES = 1000  # configs/zoo.py's eval.num_examples


def _overrides(a):
  """The --config.* overrides the old flags stand for, as a flat dict."""
  out = {}
  if a.examples != EXAMPLES:
    out['eval.num_examples'] = a.examples
  if a.epochs:
    out['paper.passes'] = a.epochs
  return out


def launch_args(a):
  """The launch.py arguments (after `python launch.py`) that the old flags stand for."""
  args = ['--mode=table', f'--config={CONFIG}']
  if a.only:
    args.append(f'--table_rows={a.only}')
  if a.workdirs.rstrip('/') != WORKDIRS:
    args.append(f'--workdir={a.workdirs.rstrip("/")}')
  if a.jobs > 1:
    args.append(f'--table_jobs={a.jobs}')
  if a.action == 'table':
    args.append('--table_run=false')
  if a.rerun_stale:
    args.append('--table_rerun_stale')
  return args + [runner.override_flag(k, v) for k, v in _overrides(a).items()] + a.extra


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('action', choices=['run', 'table', 'commands'])
  p.add_argument('--only', default='', help='comma-separated row names (default: all)')
  p.add_argument('--jobs', type=int, default=1, help='runs at a time')
  p.add_argument('--examples', type=int, default=EXAMPLES, help='test images evaluated (0 = all)')
  p.add_argument('--force', action='store_true', help='gone: move the row\'s workdir aside')
  p.add_argument('--rerun_stale', action='store_true',
                 help='run: also rerun rows whose results come from code older than the last '
                      'change to the evaluation code, or from a +dirty or unknown version')
  p.add_argument('--epochs', type=int, default=0,
                 help='passes over the training data for every row (0: as each config says)')
  p.add_argument('--workdirs', default=WORKDIRS, help='folder of the runs (default %(default)s)')
  argv = sys.argv[1:] if argv is None else list(argv)
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  a = p.parse_args(argv[:argv.index('--')] if '--' in argv else argv)
  a.extra = extra  # launch flags for every run, given after --
  if a.force:
    print('zoo: --force is gone: move the workdir of the row to run again aside (or delete its '
          'results.json).', file=sys.stderr)
    return 2
  if a.action == 'commands':
    module = runner.load_module(os.path.join(ROOT, CONFIG))
    rows = [n for n in a.only.split(',') if n] or list(module.ROWS)
    overrides = _overrides(a)
    for r in runner.with_needs(module, rows):
      config = runner.row_config(module, r, overrides, a.workdirs.rstrip('/'))
      print(shlex.join(runner.row_command(CONFIG, config, os.path.join(a.workdirs.rstrip('/'), r),
                                          overrides) + a.extra))
    return 0
  args = launch_args(a)
  print(f'zoo: deprecated; this is `python launch.py {shlex.join(args)}` (run from {ROOT}).',
        file=sys.stderr, flush=True)
  return subprocess.call([sys.executable, os.path.join(ROOT, 'launch.py'), *args], cwd=ROOT)


if __name__ == '__main__':
  sys.exit(main())
