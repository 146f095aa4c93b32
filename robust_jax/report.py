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
