"""Human-readable reports from results dicts (as written to results.json): one run's report is
the sections its evaluators render (robust_jax/eval/), in order; `comparison_table` sets runs side
by side. `write` puts an evaluation's results.json, report.md and plots in its directory (the
experiment's and robust_jax.evaluate's alike), stamped with `provenance()`.

    print(report.write(workdir, {**results, **report.provenance()}, artifacts, title))
    python -m robust_jax.report WORKDIR [WORKDIR ...]
"""

import json
import os
import time

import jax

from robust_jax import version
from robust_jax.eval import certify
from robust_jax.eval import detection
from robust_jax.eval import robust
from robust_jax.eval import sanity


def test_images(results):
  """Which test images ran: 'first 1,000 test images (of 10,000)' (results.json's test_split)."""
  split = results.get('test_split')
  return split['note'] if split else f'first {results["num_examples"]:,} test images'


def on_test_images(results):
  """'on all 10,000 test images' or 'on the first 1,000 test images (of 10,000)'."""
  which = test_images(results)
  return f'on {which}' if which.startswith('all ') else f'on the {which}'


def _accuracy(results, title=None):
  """robust.render's accuracy table, with which test images it was measured on."""
  table, *rest = robust.render(results, title)
  on = on_test_images(results)
  return [f'{table}\n\n{on[0].upper()}{on[1:]}.', *rest]


# Each evaluator renders its own sections and plots; a report is them in this order. A renderer
# takes (results, title) and returns its Markdown sections ([] when its results are absent); a
# plotter takes (results, artifacts, workdir), writes its PNGs and returns {title: file name}.
SECTIONS = (_accuracy, detection.render, robust.render_suite, sanity.render, certify.render)
PLOTS = (sanity.plots, robust.plots, certify.plots)


def full_report(results, title=None, images=None, console=False):
  """Markdown: every evaluator's sections and (unless console) links to the PNGs."""
  parts = [part for render in SECTIONS for part in render(results, title)]
  if images and not console:
    parts += [f'![{name}]({path})' for name, path in images.items()]
  return '\n\n'.join(parts)


def write_plots(results, artifacts, workdir):
  """Writes every evaluator's plots into workdir; returns {title: file name}."""
  out = {}
  for plot in PLOTS:
    out.update(plot(results, artifacts, workdir))
  return out


def provenance():
  """What produced a results dict: the code, the machine, JAX and its devices, and when."""
  return {'code_version': version.code_version(), 'source_digest': version.source_digest(),
          'machine': version.machine(), 'jax_version': jax.__version__,
          'devices': [str(d) for d in jax.devices()],
          'finished_at': time.strftime('%Y-%m-%dT%H:%M:%S%z')}


def write_json(path, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)  # atomic: a reader never sees half a file


def write(workdir, results, artifacts, title):
  """Writes workdir/results.json, report.md and the plots (process 0); returns the report as
  the console shows it (no image links)."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, 'results.json'), results)
    text = full_report(results, title, write_plots(results, artifacts, workdir))
    with open(os.path.join(workdir, 'report.md'), 'w') as f:
      f.write(text + '\n')
  return full_report(results, title, console=True)


def comparison_table(named_results):
  """A Markdown table with one column per run: accuracy (%) per evaluation row.

  Args:
    named_results: list of (column name, results dict) pairs; rows are the union of their attacks.
  """
  rows = ['clean']
  for _, res in named_results:
    rows += [name for name in res['attacks'] if name not in rows]
  rows.append('worst case')

  def cell(res, row):
    if row == 'clean':
      return res['clean_accuracy']
    if row == 'worst case':
      return res['worst_case_accuracy']
    return res['attacks'][row]['accuracy'] if row in res['attacks'] else None

  def spec(row):
    for _, res in named_results:
      if row in res['attacks']:
        return res['attacks'][row]['metric']
    return '-' if row == 'clean' else 'per-example min over all rows'

  head = '| evaluation | attack spec | ' + ' | '.join(n for n, _ in named_results) + ' |'
  lines = [head, '|---|---|' + '---:|' * len(named_results)]
  for row in rows:
    cells = [cell(res, row) for _, res in named_results]
    lines.append(f'| {row} | {spec(row)} | ' + ' | '.join(
        '-' if c is None else f'{100 * c:.2f}' for c in cells) + ' |')
  notes = sorted({test_images(res) for _, res in named_results})
  lines.append('')
  lines.append(f'Accuracy in % on the {"; ".join(notes)}.')
  return '\n'.join(lines)


def main(argv):
  """python -m robust_jax.report WORKDIR [WORKDIR ...]: one table from their results.json files."""
  named = []
  for wd in argv:
    with open(os.path.join(wd, 'results.json')) as f:
      named.append((os.path.basename(os.path.normpath(wd)), json.load(f)))
  print(comparison_table(named))


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  main(sys.argv[1:])
