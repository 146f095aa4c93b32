"""A table's Markdown, from its rows' results.json files alone, in the config's LAYOUT.

    text = layouts.render(module, rows, base, skipped, code, overrides)

'paper': published next to measured figures, attacks, epochs and times of every row (one line
per metric); 'zoo': one line per defense, then the command of every row. Both have a code
column (provenance.CodeCheck); robust_jax/tables/__init__.py describes them.
"""

import json
import os
import shlex

from robust_jax import report
from robust_jax import suites
from robust_jax.tables import provenance
from robust_jax.tables import runner


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
  return os.path.relpath(path, runner.ROOT) if path.startswith(runner.ROOT + os.sep) else path


def render(module, rows, base, skipped=None, code=None, overrides=None):
  """The Markdown table of `rows` from their results.json files under `base`, in the module's
  LAYOUT; rows marked `paper.prerequisite` are left out.

  code: the CodeCheck that flags stale rows (default: against this repository).
  overrides: the --config.* flags of the table's runs (for the commands the zoo layout lists).
  """
  code = code or provenance.CodeCheck()
  rows = [r for r in rows if not module.ROWS[r]().paper.get('prerequisite', False)]
  results = {}
  for r in rows:
    if os.path.exists(runner.results_path(base, r)):
      with open(runner.results_path(base, r)) as f:
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
    run = [shlex.join(runner.row_command(path, runner.row_config(module, n, overrides, base),
                                         os.path.join(base, n), overrides))
           for n in runner.with_needs(module, [r])]
    cmds.append(f'- {r}: ' + ' then '.join(f'`{c}`' for c in run))
  lines += ['', f'Accuracy in % on the {"; ".join(sorted(ns))}; '
            f'devices: {", ".join(sorted(devs)) or "-"}.', code.footnote()]
  if partial_rows:
    lines += ['', f'† Upper bound from the attacks that ran: the full standard suite did not '
              f'run for {", ".join(partial_rows)} (their adaptive attack stands in where the '
              "suite's attacks cannot use BPDA, EOT or the detector)."]
  table = ['python', 'launch.py', '--mode=table', f'--config={path}']
  if base != runner.default_base(module):
    table.append(f'--workdir={base}')
  table += [runner.override_flag(k, v) for k, v in overrides.items()]
  return lines, ['', 'Commands (the whole table: `' + shlex.join(table) + '`):', ''] + cmds
