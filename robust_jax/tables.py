r"""Tables: `launch.py --mode=table --config=<table config>`, the one runner of the paper tables
(configs/papers/<paper>.py) and the defense zoo (configs/zoo.py).

A table config has `ROWS`, row name -> function returning the row's config, whose `paper` fields
(configs/papers/common.py documents them) say what the table needs: the row's name and title,
its scale, the rows it needs (a distillation teacher, ensemble members) and which config field
takes their workdirs. `run_table` runs the chosen rows, each after the rows it needs, whose
workdir (`<base>/<row>`; base default: the config's `WORKDIRS`, else `workdirs/papers/<PAPER>`)
has no results.json yet, resuming any that a kill interrupted: in this process one after the
other, or with `jobs` > 1 that many at a time, each as its own `launch.py` process (`launcher`,
the command the zoo table lists) writing `<base>/<row>.log`. Then it renders the Markdown table
from the results.json files alone, in the config's `LAYOUT`:

  'paper' (the default)  published and measured clean and robust accuracy, the delta, the
                         attacks, the epochs and the wall time of every row. Figures come from
                         `paper.published` and `paper.labels` in each run's stored config, and
                         from its measured results.
  'zoo'                  one line per defense: clean, naive PGD, adaptive attack, worst case,
                         sanity checks and training time, then the command of every row. Rows
                         marked `paper.prerequisite` run but are not shown.

A row whose run is missing is listed as not run. In the paper layout the epochs column gives the
epochs trained, and the epoch of the evaluated weights where it differs (a rollback after
catastrophic overfitting; the best epoch of co_action 'best'). Both layouts have a code column:
each row's `code_version`, flagged "stale" where its code does not contain the last change to
the evaluation and attack code, or is '+dirty' or unknown (CodeCheck); `rerun_stale`
(launch.py --table_rerun_stale) runs those rows again instead of collecting them. A rerun
resumes the row's workdir: a finished training is kept, the evaluation runs again.

  which rows: 'cpu' (every `paper.scale == 'cpu'` row; the default), 'full', 'all', or
  comma-separated names. Flags given as --config.a.b=v apply to every row run.
"""

import concurrent.futures
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time

import jax
from absl import logging

from robust_jax import errors
from robust_jax import report
from robust_jax import suites

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALES = ('cpu', 'full', 'all')
LAYOUTS = ('paper', 'zoo')
# The evaluation and attack code: results from a commit older than its last change are stale.
# robust_jax/eval holds it since it moved there (evaluate.py became eval/robust.py, sanity.py and
# detection.py moved in); the old paths keep the history before the move.
EVAL_CODE = ('robust_jax/attacks', 'robust_jax/eval', 'robust_jax/evaluate.py',
             'robust_jax/sanity.py', 'robust_jax/detection.py')


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


def _results_path(base, row):
  return os.path.join(base, row, 'results.json')


def _stale(base, row, code):
  """Why the results.json of `row` under `base` is stale under `code` (a CodeCheck), or None."""
  with open(_results_path(base, row)) as f:
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
    code = code or CodeCheck()
  from robust_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  configs = {r: row_config(module, r, overrides, base) for r in rows}
  # Every row's config is checked before the first one starts, except those of rows that need
  # a row yet to run here (an ensemble reads its members' config.json): each just before it runs.
  later = {r for r in rows if any(n in configs and not os.path.exists(_results_path(base, n))
                                  for n in needs(configs[r].paper))}
  for r in rows:
    if r not in later:
      validate(configs[r])
  skipped, finished, pending, running = {}, set(), list(rows), {}

  def to_run(r):
    if not os.path.exists(_results_path(base, r)):
      return True
    why = _stale(base, r, code) if rerun_stale else None
    if not why:
      logging.info('%s/%s: results.json exists; collected, not rerun.', module.PAPER, r)
      return False
    logging.info('%s/%s: results.json is stale (%s); running it again.', module.PAPER, r, why)
    return True

  def attempt(r):
    logging.info('%s/%s: running (%s).', module.PAPER, r, configs[r].paper.title)
    try:
      run_fn(configs[r], os.path.join(base, r))
    except (data_lib.DatasetUnavailableError, RowFailedError) as e:
      logging.error('%s/%s: not run: %s', module.PAPER, r, e)
      return str(e)
    return None

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
          if not to_run(r):
            finished.add(r)
            continue
          if r in later:
            validate(configs[r])
          if pool is None:
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


UNCHANGED_TRAILER = 'Results-unchanged:'  # in a commit message: see CodeCheck


def _git(root, *args):
  """(return code, stdout) of `git args` run in `root`; (None, '') where git cannot run."""
  try:
    p = subprocess.run(['git', *args], cwd=root, capture_output=True, text=True, timeout=60)
  except (OSError, subprocess.SubprocessError):
    return None, ''
  return p.returncode, p.stdout.strip()


def short_version(version):
  """'1a2b3c4', '1a2b3c4+dirty' or 'unknown' for a results.json `code_version`."""
  if not version or version == 'unknown':
    return 'unknown'
  commit, dirty = version.split('+')[0], '+dirty' in version
  return commit[:7] + ('+dirty' if dirty else '')


class CodeCheck:
  """Judges results.json `code_version`s against the evaluation code of the repository `root`.

  A row is stale (`stale` returns why) when its version is unknown or '+dirty' (uncommitted
  edits: which ones is not recorded), when its commit is not in this repository, or when it does
  not contain `last_change`, the last commit that changed `EVAL_CODE` (git merge-base
  --is-ancestor). Without git history here every row is stale: nothing can be checked.

  A commit whose message has a `Results-unchanged: <evidence>` trailer (a refactoring shown to
  give bitwise the same results, e.g. by the default config's results.json before and after)
  does not count as a change: it leaves the rows before it current.
  """

  def __init__(self, root=None):
    self.root = root or ROOT
    rc, out = _git(self.root, 'log', '-1', '--format=%H', '--invert-grep',
                   f'--grep=^{UNCHANGED_TRAILER}', '--', *EVAL_CODE)
    self.last_change = out if rc == 0 and out else None
    rc, out = _git(self.root, 'status', '--porcelain', '--', *EVAL_CODE)
    self.eval_code_dirty = rc == 0 and bool(out)  # uncommitted edits to it in this checkout
    self._seen = {}

  def stale(self, version):
    """None if `version` has today's evaluation code, else the reason its row is flagged."""
    if version not in self._seen:
      self._seen[version] = self._stale(version)
    return self._seen[version]

  def _stale(self, version):
    if not version or version == 'unknown':
      return 'no code version recorded'
    if '+dirty' in version:
      return 'uncommitted changes (+dirty): the code that ran is not recorded'
    if self.last_change is None:
      return 'no git history of the evaluation code here to check it against'
    rc, _ = _git(self.root, 'merge-base', '--is-ancestor', self.last_change, version)
    if rc == 0:
      return None
    if rc == 1:
      return (f'older than the last change to the evaluation code '
              f'({short_version(self.last_change)})')
    return 'commit not in this repository'

  def cell(self, version):
    """The table cell: the short version, '(stale)' after it when flagged."""
    return short_version(version) + (' (stale)' if self.stale(version) else '')

  def footnote(self):
    """The line under a table that says what the rows were checked against."""
    if self.last_change is None:
      return ('Code: no git history of the evaluation code here, so no row could be checked '
              'against it.')
    text = (f'Code: each row\'s results.json `code_version`; "stale" where it is unknown, '
            f'+dirty, or older than {short_version(self.last_change)}, the last change to '
            f'the evaluation and attack code ({", ".join(EVAL_CODE)}; commits marked '
            f'`{UNCHANGED_TRAILER}` do not count).')
    if self.eval_code_dirty:
      text += (' That code has uncommitted changes in this checkout, which no row has been '
               'checked against.')
    return text


def sanity_summary(results):
  """'7/9 PASS; FAIL: a, b; WARN: c' for the sanity checks of a results dict ('-' if none ran)."""
  checks = results.get('sanity_checks') or []
  if not checks:
    return '-'
  fails = [c['name'] for c in checks if c['verdict'] == 'FAIL']
  warns = [c['name'] for c in checks if c['verdict'] == 'WARN']
  passed = sum(c['verdict'] == 'PASS' for c in checks)
  text = f'{passed}/{len(checks)} PASS'
  if fails:
    text += '; FAIL: ' + ', '.join(fails)
  if warns:
    text += '; WARN: ' + ', '.join(warns)
  return text


def measured(results, metric):
  """The accuracy in [0,1] that `metric` names in a results dict, or None."""
  if metric.startswith('best_'):
    return measured(results.get('early_stopping') or {}, metric[len('best_'):])
  if metric == 'clean':
    return results.get('clean_accuracy')
  if metric == 'suite':
    return (results.get('suite') or {}).get('accuracy')
  if metric == 'worst':
    return results.get('worst_case_accuracy')
  return ((results.get('attacks') or {}).get(metric) or {}).get('accuracy')


def _attack_used(results, metric):
  if metric.startswith('best_'):
    inner = _attack_used(results.get('early_stopping') or {}, metric[len('best_'):])
    step = (results.get('early_stopping') or {}).get('step')
    return f'{inner}, weights of step {step}'
  if metric == 'suite':
    s = results.get('suite')
    return f'{s["name"]} suite ({", ".join(a["name"] for a in s["attacks"])})' if s else '-'
  if metric == 'worst':
    return 'per-example minimum over every attack run'
  a = (results.get('attacks') or {}).get(metric)
  return a['metric'] if a else '-'


def _pct(x):
  return '-' if x is None else f'{100 * x:.2f}'


def _delta(ours, paper):
  if ours is None or paper is None:
    return '-'
  return f'{100 * ours - paper:+.2f}'


def _duration(seconds):
  if seconds is None:
    return '-'
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


def _steps_per_epoch(cfg):
  n_train = {'mnist': 60000, 'fashion_mnist': 60000, 'cifar10': 50000, 'cifar100': 50000,
             'svhn_cropped': 73257}.get(cfg['data']['name'])
  if not n_train:
    return None
  n_train -= cfg['train'].get('monitor_examples', 0)
  return max(1, n_train // cfg['train']['batch_size'])


def _epoch(steps, spe):
  return f'{steps / spe:.3g}'


def _epochs(results, paper_epochs):
  """The epochs cell: 'trained / paper', and the epoch of the evaluated weights if it differs.

  `train_steps` is the step of the weights evaluated: after a rollback, the best epoch's, while
  training went on to the monitor's `stopped_at`. With co_action 'best' the final weights are
  the table's and the best epoch's are its best_* metrics.
  """
  spe, weights = _steps_per_epoch(results['config']), results.get('train_steps')
  if weights is None or spe is None:
    return f'- / {paper_epochs}'
  trained = (results.get('monitor') or {}).get('stopped_at') or weights
  text = f'{_epoch(trained, spe)} / {paper_epochs}'
  if _epoch(weights, spe) != _epoch(trained, spe):
    text += f' (weights of epoch {_epoch(weights, spe)})'
  best = (results.get('early_stopping') or {}).get('step')
  if best is not None and _epoch(best, spe) != _epoch(weights, spe):
    text += f' (best-epoch rows: weights of epoch {_epoch(best, spe)})'
  return text


def row_lines(results, code_cell=''):
  """The table lines of one results dict: the clean line, then one per published metric.

  code_cell: the code column of the first line (the row's code version)."""
  paper = results['config']['paper']
  published, labels = dict(paper.get('published') or {}), dict(paper.get('labels') or {})
  metrics = ['clean'] + [m for m in published if m != 'clean']
  for m in labels:  # measured figures the paper has no number for (e.g. AutoAttack)
    if m not in metrics and measured(results, m) is not None:
      metrics.append(m)
  metrics.append('worst')
  train_s = results.get('train_seconds_total') or results.get('train_seconds_this_run')
  eval_s = (results.get('eval_seconds') or 0) + (
      (results.get('early_stopping') or {}).get('eval_seconds') or 0)
  head = (f'{paper["row"]} | {paper["title"]} | {_epochs(results, paper["epochs"])} | '
          f'{_test_cell(results)}')
  lines = []
  for i, m in enumerate(metrics):
    ours, pub = measured(results, m), published.get(m)
    label = {'clean': 'clean', 'worst': 'worst case'}.get(m) or labels.get(m, m)
    used = '-' if m == 'clean' else _attack_used(results, m)
    first = head if i == 0 else ' |  |  | '
    time_cell = f'{_duration(train_s)} + {_duration(eval_s)}' if i == 0 else ''
    lines.append(f'| {first} | {label} | {used} | {"-" if pub is None else f"{pub:.2f}"} | '
                 f'{_pct(ours)} | {_delta(ours, pub)} | {time_cell} | '
                 f'{code_cell if i == 0 else ""} |')
  return lines


def _test_cell(results):
  """The 'test images' cell: 'first 1,000 of 10,000', 'all 10,000', or (older results) n."""
  split = results.get('test_split')
  if not split:
    return f'{results.get("num_examples")}'
  if split['examples'] == split['of']:
    return f'all {split["of"]:,}'
  return f'first {split["examples"]:,}' + (f' of {split["of"]:,}' if split['of'] else '')


HEADER = ('| row | setting | epochs (ours / paper) | test images | metric (as published) | '
          'attack (ours) | paper % | ours % | delta | train + eval time | code |')
RULE = '|---|---|---:|---:|---|---|---:|---:|---:|---|---|'


def _config_path(module):
  """The table config's path as launch.py takes it from the repository root."""
  path = os.path.abspath(module.__file__)
  return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def render(module, rows, base, skipped=None, code=None, overrides=None):
  """The Markdown table of `rows` from their results.json files under `base`, in the module's
  LAYOUT; rows marked `paper.prerequisite` are left out.

  code: the CodeCheck that flags stale rows (default: against this repository).
  overrides: the --config.* flags of the table's runs (for the commands the zoo layout lists).
  """
  code = code or CodeCheck()
  rows = [r for r in rows if not module.ROWS[r]().paper.get('prerequisite', False)]
  results = {}
  for r in rows:
    if os.path.exists(_results_path(base, r)):
      with open(_results_path(base, r)) as f:
        results[r] = json.load(f)
  layout = {'paper': _paper_layout, 'zoo': _zoo_layout}[getattr(module, 'LAYOUT', 'paper')]
  lines, tail = layout(module, rows, results, base, code, overrides or {})
  stale = [(r, code.stale(results[r].get('code_version'))) for r in rows if r in results]
  stale = [f'- {r}: stale, {why}.' for r, why in stale if why]
  if stale:
    lines += [''] + stale + ['', 'Run them again with `--table_rerun_stale`.']
  lines += tail
  skipped = skipped or {}
  missing = [r for r in rows if r not in results]
  for r in [m for m in missing if m in skipped]:
    lines += ['', f'Could not run {r} here: {skipped[r]}']
  if [m for m in missing if m not in skipped]:
    lines += ['', f'Not run yet: {", ".join(m for m in missing if m not in skipped)}.']
  return '\n'.join(lines)


def _paper_layout(module, rows, results, base, code, overrides):
  """Published next to measured: (lines, lines after the stale rows)."""
  del overrides
  lines = [f'**{module.PAPER}** ({base})', '', HEADER, RULE]
  notes, devices, sources = [], set(), set()
  for r in [r for r in rows if r in results]:
    res = results[r]
    lines += row_lines(res, code.cell(res.get('code_version')))
    paper = res['config']['paper']
    devices.update(d.split('(')[0] for d in res.get('devices', []))
    if res.get('sanity_checks'):
      notes.append(f'- {r}: sanity checks {sanity_summary(res)}.')
    if paper.get('cut'):
      of = f' (the CPU-sized cut of {paper["of"]})' if paper.get('of') else ''
      notes.append(f'- {r}: {paper["cut"]}{of}.')
    sources.add(paper['source'])
    if res.get('monitor') and res['monitor'].get('collapses'):
      mon = res['monitor']
      first = mon['collapses'][0]
      notes.append(f'- {r}: catastrophic overfitting detected at epoch {first["epoch"]:g} '
                   f'(monitored PGD accuracy {100 * first["pgd_accuracy"]:.1f}% against the '
                   f'best {100 * first["best_pgd_accuracy"]:.1f}%); co_action '
                   f'{mon["co_action"]}' + (f', stopped at step {mon["stopped_at"]}, weights of '
                                             f'step {mon["rolled_back_to"]}'
                                             if mon.get('stopped_at') else '') + '.')
  if sources:
    lines += ['', 'Published figures: ' + '; '.join(sorted(sources)) + '.']
  if devices:
    lines.append(f'Devices: {", ".join(sorted(devices))}.')
  if results:
    lines.append(code.footnote())
  if notes:
    lines += [''] + notes
  return lines, []


def _pct1(x):
  return '-' if x is None else f'{100 * x:.1f}'


def summarise(results):
  """The zoo table's figures from one results.json: dict of fractions/None and texts."""
  a = results.get('attacks', {})
  naive = a.get('naive', {}).get('accuracy')
  if 'adaptive' in a:
    adaptive, how = a['adaptive']['accuracy'], a['adaptive']['metric']
    extra = ('_bpda' if a['adaptive'].get('bpda') else '') + (
        f'_eot{a["adaptive"]["eot_samples"]}' if a['adaptive'].get('eot_samples', 1) > 1 else '')
    if extra and not how.endswith(extra):  # results written before describe() named them
      how += extra
  elif results.get('suite'):
    adaptive, how = results['suite']['accuracy'], f'{results["suite"]["name"]} suite'
  else:
    adaptive, how = None, '-'
  train_s = results.get('train_seconds_total', results.get('train_seconds_this_run'))
  return dict(clean=results.get('clean_accuracy'), naive=naive, adaptive=adaptive,
              adaptive_attack=how, worst=results.get('worst_case_accuracy'),
              sanity=sanity_summary(results), train_s=train_s, n=results.get('num_examples'),
              devices=results.get('devices', []))


ZOO_HEADER = ('| defense | clean | naive PGD-40 | adaptive | adaptive attack | worst case | '
              'sanity checks | train (s) | code |')
ZOO_RULE = '|---|---:|---:|---:|---|---:|---|---:|---|'


def _zoo_layout(module, rows, results, base, code, overrides):
  """One line per defense (configs/zoo.py): (lines, the commands of the rows)."""
  lines = [ZOO_HEADER, ZOO_RULE]
  path = _config_path(module)
  cmds, ns, devs, partial_rows = [], set(), set(), []
  for r in [r for r in rows if r in results]:
    res = results[r]
    s = summarise(res)
    ns.add(report.test_images(res))
    devs.update(d.split('(')[0] for d in s['devices'])
    note = module.ROWS[r]().paper.get('note')
    label = r + (f' ({note})' if note else '')
    train = '-' if s['train_s'] is None else f'{s["train_s"]:.0f}'
    partial = (res.get('suite') or {}).get('name') != suites.COMPLETE
    worst = _pct1(s['worst']) + (' †' if partial else '')
    partial_rows += [r] if partial else []
    lines.append(f'| {label} | {_pct1(s["clean"])} | {_pct1(s["naive"])} | '
                 f'{_pct1(s["adaptive"])} | {s["adaptive_attack"]} | {worst} | {s["sanity"]} | '
                 f'{train} | {code.cell(res.get("code_version"))} |')
    run = [shlex.join(row_command(path, row_config(module, n, overrides, base),
                                  os.path.join(base, n), overrides))
           for n in with_needs(module, [r])]
    cmds.append(f'- {r}: ' + ' then '.join(f'`{c}`' for c in run))
  lines += ['', f'Accuracy in % on the {"; ".join(sorted(ns))}; '
            f'devices: {", ".join(sorted(devs)) or "-"}.', code.footnote()]
  if partial_rows:
    lines += ['', f'† Upper bound from the attacks that ran: the full standard suite did not '
              f'run for {", ".join(partial_rows)} (their adaptive attack stands in where the '
              "suite's attacks cannot use BPDA, EOT or the detector)."]
  table = ['python', 'launch.py', '--mode=table', f'--config={path}']
  if base != default_base(module):
    table.append(f'--workdir={base}')
  table += [override_flag(k, v) for k, v in overrides.items()]
  return lines, ['', 'Commands (the whole table: `' + shlex.join(table) + '`):', ''] + cmds


def run_table(config_path, which, base, overrides, run, validate, run_fn, rerun_stale=False,
              jobs=1):
  """Runs the rows that lack results (if `run`; with `rerun_stale` also the stale ones), prints
  the table (process 0 also writes it to `<base>/table.md`); returns (text, {row: reason} of the
  rows that could not run here). jobs > 1: that many rows at a time, each its own process
  (`launcher`; run_fn is then unused)."""
  module = load_module(config_path)
  rows = select_rows(module, which)
  base = base or default_base(module)
  skipped = {}
  code = CodeCheck()
  if run:
    if jobs > 1:
      run_fn = launcher(config_path, overrides)
    skipped = run_rows(module, with_needs(module, rows), base, overrides, validate, run_fn,
                       rerun_stale, code, jobs)
  text = render(module, rows, base, skipped, code, overrides)
  if jax.process_index() == 0:
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, 'table.md'), 'w') as f:
      f.write(text + '\n')
  print('\n' + text + '\n', flush=True)
  return text, skipped
