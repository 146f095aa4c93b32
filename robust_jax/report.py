"""Human-readable tables from results dicts (as written to results.json)."""


def results_table(results, title=None):
  """A Markdown table: clean, each attack, and the per-example worst case."""
  n = results['num_examples']
  rows = [('clean', '-', results['clean_accuracy'], round(results['clean_accuracy'] * n))]
  for name, a in results['attacks'].items():
    rows.append((name, a['metric'], a['accuracy'], a['correct']))
  rows.append(('worst case', 'per-example min over all rows', results['worst_case_accuracy'],
               results['worst_case_correct']))
  lines = [] if title is None else [f'### {title}', '']
  lines += ['| evaluation | attack spec | accuracy (%) | correct / n |',
            '|---|---|---:|---:|']
  lines += [f'| {r[0]} | {r[1]} | {100 * r[2]:.2f} | {r[3]} / {n} |' for r in rows]
  return '\n'.join(lines)


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
  n = {res['num_examples'] for _, res in named_results}
  lines.append('')
  lines.append(f'Accuracy in % over {", ".join(map(str, sorted(n)))} test examples.')
  return '\n'.join(lines)


def main(argv):
  """python -m robust_jax.report WORKDIR [WORKDIR ...]: one table from their results.json files."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  named = []
  for wd in argv:
    with open(os.path.join(wd, 'results.json')) as f:
      named.append((os.path.basename(os.path.normpath(wd)), json.load(f)))
  print(comparison_table(named))


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  main(sys.argv[1:])
