r"""The defense zoo: every defense trained on Fashion-MNIST and evaluated with its adaptive attack.

    python -m robust_jax.zoo run [--jobs=2] [--only=trades,mart] [--examples=1000]  # train + eval
    python -m robust_jax.zoo table                                                 # RESULTS table

`run` executes, for each row of `ROWS` whose WORKDIR has no results.json yet, the command

    python launch.py --config=CONFIG --workdir=workdirs/zoo/NAME --config.eval.num_examples=N ...

after the runs it depends on (a distillation student after its teacher, an ensemble after its
members), `--jobs` of them at a time, each logging to workdirs/zoo/NAME.log. `table` prints one
Markdown row per defense: clean accuracy, accuracy under the naive PGD (`eval.attacks.naive`),
under the adaptive attack (`eval.attacks.adaptive`, or the attack suite when there is none), the
per-example worst case over every attack that ran, the sanity-check verdicts, training time and
the code version of the row's results.json, with the command that produced the row. A row is
flagged "stale" (`CodeCheck`) when its code does not contain the last commit that changed the
evaluation and attack code (`EVAL_CODE`), or when its version is '+dirty' or unknown;
`run --rerun_stale` runs such rows again (resuming their checkpoints: a finished training is kept
and the evaluation runs again with today's code).
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

from robust_jax import suites
from robust_jax import tables
from robust_jax.tables import CodeCheck
from robust_jax.tables import sanity_summary

ROOT = tables.ROOT
WORKDIRS = os.path.join('workdirs', 'zoo')


def _row(name, config, *flags, needs=(), table=True, note='', epoch_scale=1):
  """epoch_scale: `train.epochs` per epoch of data under `--epochs` (free AT: its replays)."""
  return dict(name=name, config=config, flags=list(flags), needs=list(needs), table=table,
              note=note, epoch_scale=epoch_scale)


# Prerequisites are trained, then evaluated cheaply (naive PGD only).
_CHEAP_EVAL = ('--config.eval.suite=', '--config.eval.sanity_checks=false')
_MEMBERS = [_row(f'ensemble_member_{s}', 'configs/defenses/standard.py', f'--config.seed={s}',
                 *_CHEAP_EVAL, table=False) for s in (1, 2, 3)]

# In table order; rows with table=False are prerequisites of others.
ROWS = [
    _row('standard', 'configs/defenses/standard.py', note='baseline'),
    _row('pgd_at', 'configs/defenses/pgd_at.py'),
    _row('fgsm_rs', 'configs/defenses/fgsm_rs.py'),
    _row('free_at', 'configs/defenses/free_at.py', epoch_scale=8),
    _row('trades', 'configs/defenses/trades.py'),
    _row('mart', 'configs/defenses/mart.py'),
    _row('awp', 'configs/defenses/awp.py'),
    _row('distillation_teacher', 'configs/defenses/distillation_teacher.py', *_CHEAP_EVAL,
         table=False),
    _row('distillation', 'configs/defenses/distillation.py',
         f'--config.defense.teacher={WORKDIRS}/distillation_teacher',
         needs=['distillation_teacher']),
    *_MEMBERS,
    _row('ensemble', 'configs/defenses/ensemble.py',
         '--config.defense.members=' + ','.join(f'{WORKDIRS}/{m["name"]}' for m in _MEMBERS),
         needs=[m['name'] for m in _MEMBERS]),
    _row('ensemble_at', 'configs/defenses/ensemble_at.py',
         '--config.defense.static_models=' + ','.join(
             f'{WORKDIRS}/{m["name"]}' for m in _MEMBERS[:2]),
         needs=[m['name'] for m in _MEMBERS[:2]]),
    _row('random_resize', 'configs/defenses/random_resize.py'),
    _row('gaussian_noise', 'configs/defenses/gaussian_noise.py', note='randomised smoothing'),
    _row('bit_depth', 'configs/defenses/bit_depth.py'),
    _row('thermometer', 'configs/defenses/thermometer.py'),
    _row('median', 'configs/defenses/median.py'),
    _row('jpeg', 'configs/defenses/jpeg.py'),
    _row('feature_squeezing', 'configs/defenses/feature_squeezing.py', note='detector'),
]
BY_NAME = {r['name']: r for r in ROWS}


def _set_workdirs(path):
  """Moves every run (and the teacher/member paths in the rows' flags) under `path`."""
  global WORKDIRS
  for r in ROWS:
    r['flags'] = [f.replace(WORKDIRS + '/', path.rstrip('/') + '/') for f in r['flags']]
  WORKDIRS = path.rstrip('/')


def workdir(name):
  return os.path.join(WORKDIRS, name)


def command(row, examples, extra=(), epochs=0):
  """The launch command of a row, as a list of arguments (relative to the repository root).

  epochs > 0: train every row for that many passes over the data (`--epochs`).
  """
  args = ['python', 'launch.py', f'--config={row["config"]}', f'--workdir={workdir(row["name"])}',
          '--progress=false', *row['flags']]
  if examples:
    args.append(f'--config.eval.num_examples={examples}')
  if epochs:
    args.append(f'--config.train.epochs={epochs * row["epoch_scale"]}')
  return args + list(extra)


def _done(name):
  return os.path.exists(os.path.join(ROOT, workdir(name), 'results.json'))


def _closure(names):
  """`names` plus everything they need, in ROWS order."""
  want, stack = set(), list(names)
  while stack:
    n = stack.pop()
    if n not in BY_NAME:
      raise SystemExit(f'zoo: no row {n!r}; rows: {", ".join(BY_NAME)}')
    if n not in want:
      want.add(n)
      stack += BY_NAME[n]['needs']
  return [r for r in ROWS if r['name'] in want]


def _stale(name, code):
  """Why row `name`'s results.json is stale under `code` (a CodeCheck), or None."""
  return code.stale(_version(os.path.join(ROOT, workdir(name), 'results.json')))


def run(names, jobs, examples, extra, force=False, epochs=0, rerun_stale=False):
  """Runs the rows (and what they need) not done yet; returns the names that failed.

  rerun_stale: also run again the rows whose results are stale (`CodeCheck`).
  """
  rows = _closure(names)
  os.makedirs(os.path.join(ROOT, WORKDIRS), exist_ok=True)
  code = CodeCheck(ROOT) if rerun_stale else None
  pending = {r['name']: r for r in rows if force or not _done(r['name'])
             or (code is not None and _stale(r['name'], code))}
  finished, failed = {r['name'] for r in rows if r['name'] not in pending}, set()
  python = sys.executable

  def launch(row):
    args = command(row, examples, extra, epochs)
    args[0] = python
    log = os.path.join(ROOT, workdir(row['name']) + '.log')
    t0 = time.perf_counter()
    with open(log, 'w') as f:
      rc = subprocess.call(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    print(f'zoo: {row["name"]} rc={rc} in {time.perf_counter() - t0:.0f} s (log {log})',
          flush=True)
    return rc

  with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
    running = {}
    while pending or running:
      for name, row in list(pending.items()):
        if len(running) >= jobs:
          break
        if any(n in failed for n in row['needs']):
          failed.add(name)
          del pending[name]
          print(f'zoo: {name} skipped: a run it needs failed', flush=True)
        elif all(n in finished for n in row['needs']):
          running[pool.submit(launch, row)] = name
          del pending[name]
      if not running:
        break
      done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
      for fut in done:
        name = running.pop(fut)
        (finished if fut.result() == 0 else failed).add(name)
  return sorted(failed)


def _version(results_path):
  with open(results_path) as f:
    return json.load(f).get('code_version')


def _pct(x):
  return '-' if x is None else f'{100 * x:.1f}'


def summarise(results):
  """The table's figures from one results.json: dict of fractions/None and texts."""
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


def table(names=None, examples=1000, extra=(), epochs=0, code=None):
  """The Markdown table of the rows whose results exist, then the command of each row.

  code: the CodeCheck that flags stale rows (default: against this repository).
  """
  code = code or CodeCheck(ROOT)
  rows = [r for r in ROWS if r['table'] and (names is None or r['name'] in names)]
  lines = ['| defense | clean | naive PGD-40 | adaptive | adaptive attack | worst case | '
           'sanity checks | train (s) | code |', '|---|---:|---:|---:|---|---:|---|---:|---|']
  cmds, missing, ns, devs, stale, partial_rows = [], [], set(), set(), [], []
  for r in rows:
    path = os.path.join(ROOT, workdir(r['name']), 'results.json')
    if not os.path.exists(path):
      missing.append(r['name'])
      continue
    with open(path) as f:
      results = json.load(f)
    s = summarise(results)
    ns.add(s['n'])
    devs.update(d.split('(')[0] for d in s['devices'])
    label = r['name'] + (f' ({r["note"]})' if r['note'] else '')
    train = '-' if s['train_s'] is None else f'{s["train_s"]:.0f}'
    version = results.get('code_version')
    partial = (results.get('suite') or {}).get('name') != suites.COMPLETE
    worst = _pct(s['worst']) + (' †' if partial else '')
    partial_rows += [r['name']] if partial else []
    lines.append(f'| {label} | {_pct(s["clean"])} | {_pct(s["naive"])} | {_pct(s["adaptive"])} '
                 f'| {s["adaptive_attack"]} | {worst} | {s["sanity"]} | {train} '
                 f'| {code.cell(version)} |')
    if code.stale(version):
      stale.append(f'- {r["name"]}: stale, {code.stale(version)}.')
    needs = ''.join(f'`{" ".join(command(BY_NAME[n], examples, extra, epochs))}` then ' for n in
                    [x['name'] for x in _closure([r['name']]) if x['name'] != r['name']])
    cmds.append(f'- {r["name"]}: {needs}`{" ".join(command(r, examples, extra, epochs))}`')
  lines += ['', f'Accuracy in % on the first {", ".join(map(str, sorted(ns)))} test images; '
            f'devices: {", ".join(sorted(devs)) or "-"}.', code.footnote()]
  if partial_rows:
    lines += ['', f'† Upper bound from the attacks that ran: the full standard suite did not '
              f'run for {", ".join(partial_rows)} (their adaptive attack stands in where the '
              "suite's attacks cannot use BPDA, EOT or the detector)."]
  if stale:
    lines += [''] + stale + ['', 'Run them again with `python -m robust_jax.zoo run '
                             '--rerun_stale` (with the flags of the commands below).']
  lines += ['', 'Commands:', ''] + cmds
  if missing:
    lines += ['', f'Not run yet: {", ".join(missing)}.']
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('action', choices=['run', 'table', 'commands'])
  p.add_argument('--only', default='', help='comma-separated row names (default: all)')
  p.add_argument('--jobs', type=int, default=1, help='runs at a time')
  p.add_argument('--examples', type=int, default=1000, help='test images evaluated (0 = all)')
  p.add_argument('--force', action='store_true', help='rerun rows that have results')
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
  _set_workdirs(a.workdirs)
  names = [n for n in a.only.split(',') if n] or [r['name'] for r in ROWS]
  if a.action == 'commands':
    for r in _closure(names):
      print(' '.join(command(r, a.examples, a.extra, a.epochs)))
    return 0
  if a.action == 'run':
    failed = run(names, a.jobs, a.examples, a.extra, a.force, a.epochs, a.rerun_stale)
    if failed:
      print(f'zoo: failed: {", ".join(failed)}', file=sys.stderr)
      return 1
    return 0
  print(table(None if not a.only else set(names), a.examples, a.extra, a.epochs))
  return 0


if __name__ == '__main__':
  sys.exit(main())
