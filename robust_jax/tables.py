r"""Paper tables: `launch.py --mode=table --config=configs/papers/<paper>.py`.

A paper config (configs/papers/common.py documents its fields) has `ROWS`, row name -> config.
`run_table` runs, one after the other in this process, the chosen rows whose workdir
(`<base>/<row>`, base default `workdirs/papers/<paper>`) has no results.json yet, resuming any
that a kill interrupted, then renders the Markdown table from the results.json files alone:
published and measured clean and robust accuracy, the delta, the attacks, the epochs and the wall
time of every row. Figures come from `paper.published` and `paper.labels` in each run's stored
config, and from its measured results; a row whose run is missing is listed as not run.

The epochs column gives the epochs trained, and the epoch of the evaluated weights where it
differs (a rollback after catastrophic overfitting; the best epoch of co_action 'best'). The code
column gives each row's `code_version` and flags as "stale" the rows whose code does not contain
the last change to the evaluation and attack code, or is '+dirty' or unknown (CodeCheck);
`rerun_stale` (launch.py --table_rerun_stale) runs those rows again instead of collecting them.
A rerun resumes the row's workdir: a finished training is kept, the evaluation runs again.

  which rows: 'cpu' (every `paper.scale == 'cpu'` row; the default), 'full', 'all', or
  comma-separated names. Flags given as --config.a.b=v apply to every row run.
"""

import importlib.util
import json
import os
import subprocess

import jax
from absl import logging

from robust_jax import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALES = ('cpu', 'full', 'all')
# The evaluation and attack code: results from a commit older than its last change are stale.
EVAL_CODE = ('robust_jax/attacks', 'robust_jax/evaluate.py', 'robust_jax/sanity.py',
             'robust_jax/detection.py')


def load_module(path):
  """The paper config module at `path` (a .py file, without the ':row' argument)."""
  if not os.path.isfile(path):
    raise errors.ConfigError(f'--config={path}: no such file; paper configs are in '
                             'configs/papers/.')
  spec = importlib.util.spec_from_file_location(
      'robust_jax_paper_' + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not isinstance(getattr(module, 'ROWS', None), dict):
    raise errors.ConfigError(f'--config={path} has no ROWS: --mode=table takes a paper config '
                             '(configs/papers/*.py), not a single-run config.')
  return module


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


def with_needs(module, rows):
  """`rows` plus the rows they need (a distillation teacher), each after what it needs."""
  out = []

  def add(name):
    if name in out:
      return
    need = module.ROWS[name]().paper.needs
    if need:
      add(need)
    out.append(name)
  for r in rows:
    add(r)
  return out


def row_config(module, row, overrides, base):
  """The config of `row` with the command line's --config.* `overrides` (a flat dict) applied,
  and the workdir of the row it needs (if any) under `base`."""
  c = module.ROWS[row]()
  for path, value in overrides.items():
    *head, leaf = path.split('.')
    node = c
    try:
      for p in head:
        node = node[p]
      if leaf not in node:
        raise KeyError(leaf)
      node[leaf] = value
    except (KeyError, TypeError) as e:
      raise errors.ConfigError(
          f'--config.{path}={value!r} does not apply to row {row} of {module.PAPER} ({e}); '
          'choose the rows it applies to with --table_rows.') from e
  if c.paper.needs and c.defense.get('teacher') is not None:
    c.defense.teacher = os.path.join(base, c.paper.needs)
  return c


def _results_path(base, row):
  return os.path.join(base, row, 'results.json')


def _stale(base, row, code):
  """Why the results.json of `row` under `base` is stale under `code` (a CodeCheck), or None."""
  with open(_results_path(base, row)) as f:
    return code.stale(json.load(f).get('code_version'))


def run_rows(module, rows, base, overrides, validate, run_fn, rerun_stale=False, code=None):
  """Runs (or resumes) each row of `rows` that has no results.json under `base`.

  validate(config) checks a row's config before anything runs; run_fn(config, workdir) trains
  and evaluates it (experiment.train_and_evaluate). A row whose dataset cannot be had here
  (DatasetUnavailableError) is skipped with its reason, and so are the rows that need it; any
  other error stops the table. Returns {row: reason} of the rows skipped.
  rerun_stale: also runs the rows whose results.json is stale under `code` (a CodeCheck;
  default: against this repository).
  """
  if rerun_stale:
    code = code or CodeCheck()
  from robust_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  configs = {r: row_config(module, r, overrides, base) for r in rows}
  for c in configs.values():
    validate(c)  # every row's config is checked before the first one starts
  skipped = {}
  for r in rows:
    need = configs[r].paper.needs
    if need in skipped:
      skipped[r] = f'needs {need}, which did not run'
      continue
    if os.path.exists(_results_path(base, r)):
      why = _stale(base, r, code) if rerun_stale else None
      if not why:
        logging.info('%s/%s: results.json exists; collected, not rerun.', module.PAPER, r)
        continue
      logging.info('%s/%s: results.json is stale (%s); running it again.', module.PAPER, r, why)
    logging.info('%s/%s: running (%s).', module.PAPER, r, configs[r].paper.title)
    try:
      run_fn(configs[r], os.path.join(base, r))
    except data_lib.DatasetUnavailableError as e:
      logging.error('%s/%s: not run: %s', module.PAPER, r, e)
      skipped[r] = str(e)
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
          f'{results.get("num_examples")}')
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


HEADER = ('| row | setting | epochs (ours / paper) | test images | metric (as published) | '
          'attack (ours) | paper % | ours % | delta | train + eval time | code |')
RULE = '|---|---|---:|---:|---|---|---:|---:|---:|---|---|'


def render(module, rows, base, skipped=None, code=None):
  """The Markdown table of `rows` from their results.json files under `base`.

  code: the CodeCheck that flags stale rows (default: against this repository).
  """
  code = code or CodeCheck()
  lines = [f'**{module.PAPER}** ({base})', '', HEADER, RULE]
  missing, notes, devices, sources, stale = [], [], set(), set(), []
  for r in rows:
    path = _results_path(base, r)
    if not os.path.exists(path):
      missing.append(r)
      continue
    with open(path) as f:
      results = json.load(f)
    version = results.get('code_version')
    lines += row_lines(results, code.cell(version))
    if code.stale(version):
      stale.append(f'- {r}: stale, {code.stale(version)}.')
    paper = results['config']['paper']
    devices.update(d.split('(')[0] for d in results.get('devices', []))
    if results.get('sanity_checks'):
      notes.append(f'- {r}: sanity checks {sanity_summary(results)}.')
    if paper.get('cut'):
      of = f' (the CPU-sized cut of {paper["of"]})' if paper.get('of') else ''
      notes.append(f'- {r}: {paper["cut"]}{of}.')
    sources.add(paper['source'])
    if results.get('monitor') and results['monitor'].get('collapses'):
      mon = results['monitor']
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
  if len(missing) < len(rows):
    lines.append(code.footnote())
  if notes:
    lines += [''] + notes
  if stale:
    lines += [''] + stale + ['', 'Run them again with `--table_rerun_stale`.']
  skipped = skipped or {}
  for r in [m for m in missing if m in skipped]:
    lines += ['', f'Could not run {r} here: {skipped[r]}']
  if [m for m in missing if m not in skipped]:
    lines += ['', f'Not run yet: {", ".join(m for m in missing if m not in skipped)}.']
  return '\n'.join(lines)


def run_table(config_path, which, base, overrides, run, validate, run_fn, rerun_stale=False):
  """Runs the rows that lack results (if `run`; with `rerun_stale` also the stale ones), prints
  the table (process 0 also writes it to `<base>/table.md`); returns (text, {row: reason} of the
  rows that could not run here)."""
  module = load_module(config_path)
  rows = select_rows(module, which)
  base = base or os.path.join('workdirs', 'papers', module.PAPER)
  skipped = {}
  code = CodeCheck()
  if run:
    skipped = run_rows(module, with_needs(module, rows), base, overrides, validate, run_fn,
                       rerun_stale, code)
  text = render(module, rows, base, skipped, code)
  if jax.process_index() == 0:
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, 'table.md'), 'w') as f:
      f.write(text + '\n')
  print('\n' + text + '\n', flush=True)
  return text, skipped

