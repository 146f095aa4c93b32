"""Running a table's rows: the table config, each row's config and command, and the runs.

    module = runner.load_module('configs/zoo.py')
    rows = runner.with_needs(module, runner.select_rows(module, 'cpu'))
    skipped = runner.run_rows(module, rows, base, overrides, validate, run_fn)   # {row: why}

Each row runs in `<base>/<row>` after the rows it needs, in this process (`run_fn`) or as its
own launch.py process (`launcher`); robust_jax/tables/__init__.py describes the whole table.
"""

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys
import time

from absl import logging

from robust_jax import errors
from robust_jax.tables import provenance

ROOT = provenance.ROOT
SCALES = ('cpu', 'full', 'all')
LAYOUTS = ('paper', 'zoo')


class RowFailedError(Exception):
  """A row's own launch.py process (`launcher`) exited with an error."""


def load_module(path):
  """The table config module at `path` (a .py file, without the ':row' argument)."""
  if not os.path.isfile(path):
    raise errors.ConfigError(f'--config={path}: no such file; table configs are '
                             'configs/zoo.py and configs/papers/*.py.')
  spec = importlib.util.spec_from_file_location(
      'robust_jax_paper_' + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not isinstance(getattr(module, 'ROWS', None), dict):
    raise errors.ConfigError(f'--config={path} has no ROWS: --mode=table takes a table config '
                             '(configs/zoo.py, configs/papers/*.py), not a single-run config.')
  if getattr(module, 'LAYOUT', 'paper') not in LAYOUTS:
    raise errors.ConfigError(f'--config={path}: LAYOUT {module.LAYOUT!r} is none of '
                             f'{", ".join(LAYOUTS)}.')
  return module


def default_base(module):
  """Where a table's runs go unless --workdir says: `WORKDIRS`, else workdirs/papers/<PAPER>."""
  return getattr(module, 'WORKDIRS', None) or os.path.join('workdirs', 'papers', module.PAPER)


def select_rows(module, which):
  """Row names of `module` for `which` (see the module docstring), in the module's order."""
  names = list(module.ROWS)
  if which in SCALES:
    if which == 'all':
      return names
    return [n for n in names if module.ROWS[n]().paper.scale == which]
  picked = [n.strip() for n in str(which).split(',') if n.strip()]
  bad = [n for n in picked if n not in module.ROWS]
  if bad or not picked:
    raise errors.ConfigError(f'--table_rows={which!r}: valid: {", ".join(SCALES)} or rows of '
                             f'{module.PAPER}: {", ".join(names)}.')
  return [n for n in names if n in picked]


def needs(paper):
  """The rows a row needs: its `paper.needs`, one row name or several comma-separated."""
  return [n for n in str(paper.get('needs') or '').split(',') if n]


def with_needs(module, rows):
  """`rows` plus the rows they need (a distillation teacher, ensemble members), each after what
  it needs."""
  out = []

  def add(name):
    if name in out:
      return
    for need in needs(module.ROWS[name]().paper):
      add(need)
    out.append(name)
  for r in rows:
    add(r)
  return out


def _node(c, path):
  """(the ConfigDict holding dotted `path`, its last key)."""
  *head, leaf = path.split('.')
  for p in head:
    c = c[p]
  return c, leaf


def row_config(module, row, overrides, base):
  """The config of `row` with the command line's --config.* `overrides` (a flat dict) applied,
  and the workdirs of the rows it needs (if any) under `base`, comma-separated in the field
  `paper.needs_field` names (default defense.teacher)."""
  c = module.ROWS[row]()
  for path, value in overrides.items():
    try:
      node, leaf = _node(c, path)
      if leaf not in node:
        raise KeyError(leaf)
      node[leaf] = value
    except (KeyError, TypeError) as e:
      raise errors.ConfigError(
          f'--config.{path}={value!r} does not apply to row {row} of {module.PAPER} ({e}); '
          'choose the rows it applies to with --table_rows.') from e
  node, leaf = _node(c, c.paper.get('needs_field', 'defense.teacher'))
  if needs(c.paper) and node.get(leaf) is not None:
    node[leaf] = ','.join(os.path.join(base, n) for n in needs(c.paper))
  return c


def results_path(base, row):
  return os.path.join(base, row, 'results.json')


def _stale(base, row, code):
  """Why the results.json of `row` under `base` is stale under `code` (a CodeCheck), or None."""
  with open(results_path(base, row)) as f:
    return code.stale(json.load(f).get('code_version'))


def override_flag(path, value):
  """The command-line flag of one --config override: `--config.PATH=VALUE`."""
  if isinstance(value, bool):
    value = 'true' if value else 'false'
  elif isinstance(value, (tuple, list)):
    value = '(' + ','.join(map(str, value)) + ')'
  return f'--config.{path}={value}'


def row_command(config_path, config, workdir, overrides):
  """The launch.py command (a list of arguments, run from the repository root) that runs the
  row of `config` (a row_config) on its own in `workdir`, with the table's `overrides`."""
  args = ['python', 'launch.py', f'--config={config_path}:{config.paper.row}',
          f'--workdir={workdir}', '--progress=false']
  args += [override_flag(k, v) for k, v in overrides.items()]
  field = config.paper.get('needs_field', 'defense.teacher')
  node, leaf = _node(config, field)
  if needs(config.paper) and node.get(leaf) is not None:
    args.append(override_flag(field, node[leaf]))
  return args


def launcher(config_path, overrides):
  """A run_fn for run_rows that runs each row as its own process: `row_command` with this
  Python, in this directory, its output in `<workdir>.log`; RowFailedError when it fails."""

  def run(config, workdir):
    args = row_command(config_path, config, workdir, overrides)
    args[:2] = [sys.executable, os.path.join(ROOT, 'launch.py')]
    log = workdir + '.log'
    os.makedirs(os.path.dirname(log) or '.', exist_ok=True)
    t0 = time.perf_counter()
    with open(log, 'w') as f:
      rc = subprocess.call(args, cwd=os.getcwd(), stdout=f, stderr=subprocess.STDOUT)
    print(f'tables: {config.paper.row} rc={rc} in {time.perf_counter() - t0:.0f} s (log {log})',
          flush=True)
    if rc:
      raise RowFailedError(f'its launch.py exited with {rc}; see {log}')
  return run


def run_rows(module, rows, base, overrides, validate, run_fn, rerun_stale=False, code=None,
             jobs=1):
  """Runs (or resumes) each row of `rows` that has no results.json under `base`.

  validate(config) checks a row's config before anything runs; run_fn(config, workdir) trains
  and evaluates it (experiment.train_and_evaluate, or a `launcher`). A row whose dataset cannot
  be had here (DatasetUnavailableError) or whose process failed (RowFailedError) is skipped with
  its reason, and so are the rows that need it; any other error stops the table. Returns
  {row: reason} of the rows skipped.
  rerun_stale: also runs the rows whose results.json is stale under `code` (a CodeCheck;
  default: against this repository).
  jobs: rows at a time, each once the rows it needs have finished (> 1: in threads, so run_fn
  must start a process, as a `launcher` does); 1: one after the other, in this thread.
  """
  if rerun_stale:
    code = code or provenance.CodeCheck()
  configs = {r: row_config(module, r, overrides, base) for r in rows}
  # Every row's config is checked before the first one starts, except those of rows that need
  # a row yet to run here (an ensemble reads its members' config.json): each just before it runs.
  later = {r for r in rows if any(n in configs and not os.path.exists(results_path(base, n))
                                  for n in needs(configs[r].paper))}
  for r in rows:
    if r not in later:
      validate(configs[r])

  def prepare(r):
    if not _to_run(module, base, r, rerun_stale, code):
      return False
    if r in later:
      validate(configs[r])
    return True

  def attempt(r):
    return _attempt(module, r, configs[r], os.path.join(base, r), run_fn)

  return _in_order(module, rows, configs, jobs, prepare, attempt)


def _to_run(module, base, row, rerun_stale, code):
  """Whether `row` runs: it has no results.json, or (rerun_stale) a stale one."""
  if not os.path.exists(results_path(base, row)):
    return True
  why = _stale(base, row, code) if rerun_stale else None
  if not why:
    logging.info('%s/%s: results.json exists; collected, not rerun.', module.PAPER, row)
    return False
  logging.info('%s/%s: results.json is stale (%s); running it again.', module.PAPER, row, why)
  return True


def _attempt(module, row, config, workdir, run_fn):
  """Runs one row; returns None, or why it could not run here (its data, its process)."""
  from robust_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  logging.info('%s/%s: running (%s).', module.PAPER, row, config.paper.title)
  try:
    run_fn(config, workdir)
  except (data_lib.DatasetUnavailableError, RowFailedError) as e:
    logging.error('%s/%s: not run: %s', module.PAPER, row, e)
    return str(e)
  return None


def _in_order(module, rows, configs, jobs, prepare, attempt):
  """Attempts each row once the rows it needs have finished, `jobs` at a time; {row: why} skipped.

  prepare(row) (in this thread) says whether the row runs (False: it counts as finished);
  attempt(row) runs it, returning None or why it could not run (then its dependents are skipped).
  """
  skipped, finished, pending, running = {}, set(), list(rows), {}

  def settle(r, why):
    if why:
      skipped[r] = why
    else:
      finished.add(r)

  pool = concurrent.futures.ThreadPoolExecutor(jobs) if jobs > 1 else None
  try:
    while pending or running:
      waiting = list(pending)
      for r in waiting:
        if len(running) >= jobs:
          break
        need = needs(configs[r].paper)
        failed = [n for n in need if n in skipped]
        if failed:
          skipped[r] = f'needs {failed[0]}, which did not run'
          pending.remove(r)
        elif all(n in finished or n not in configs for n in need):
          pending.remove(r)
          if not prepare(r):
            finished.add(r)
          elif pool is None:
            settle(r, attempt(r))
          else:
            running[pool.submit(attempt, r)] = r
      if running:
        done, _ = concurrent.futures.wait(running,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          settle(running.pop(future), future.result())
      elif pending == waiting:  # nothing could start: the rows left need each other
        raise errors.ConfigError(f'{module.PAPER}: rows {", ".join(pending)} need each other.')
  finally:
    if pool is not None:
      pool.shutdown()
  return skipped
