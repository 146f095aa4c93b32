"""Human-readable tables from results dicts (as written to results.json)."""

from robust_jax import suites


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
  lines += ['', f'On the {test_images(results)}.']
  caveat = worst_case_caveat(results)
  if caveat:
    lines += ['', caveat]
  return '\n'.join(lines)


def test_images(results):
  """Which test images ran: 'first 1,000 test images (of 10,000)' (results.json's test_split)."""
  split = results.get('test_split')
  return split['note'] if split else f'first {results["num_examples"]:,} test images'


def worst_case_caveat(results):
  """'' when the full standard suite ran; else why the worst case is only an upper bound."""
  suite = (results.get('suite') or {}).get('name', '')
  if suite == suites.COMPLETE:
    return ''
  if suite:
    return 'Upper bound: ' + suites.upper_bound_note(suite)
  return ('Upper bound: the worst case is over the attacks above only; the full standard suite '
          '(`--config.eval.suite=standard`) did not run.')


def suite_table(results):
  """The cascade of an attack suite: robust accuracy after each attack."""
  s = results['suite']
  lines = [f'Suite `{s["name"]}` (cascade; each attack sees only the points still robust):', '',
           '| attack | spec | attacked | broken | robust accuracy after (%) |',
           '|---|---|---:|---:|---:|']
  lines += [f'| {a["name"]} | {a["metric"]} | {a["attacked"]} | {a["broken"]} | '
            f'{100 * a["accuracy_after"]:.2f} |' for a in s['attacks']]
  note = suites.upper_bound_note(s['name'])
  if note:
    lines += ['', f'**{note}**']
  return '\n'.join(lines)


def sanity_table(results):
  checks = results['sanity_checks']
  lines = [f'Sanity checks (most on the first {checks[0]["subset"]} examples; the examples '
           'column says what each figure is computed over):', '',
           '| check | verdict | figure | examples | what the figure is |',
           '|---|---|---:|---:|---|']
  lines += [f'| {c["name"]} | {c["verdict"]} | {_figure(c["figure"])} | '
            f'{c.get("examples", "-")} | {c["detail"]} |' for c in checks]
  return '\n'.join(lines)


def _figure(v):
  return '-' if v != v else f'{v:.4g}'  # NaN: a skipped check has no figure


def detection_table(results):
  """A detector's threshold, false-positive rates, and per attack its detection rate."""
  d = results['detection']
  pct = lambda v: '-' if v is None else f'{100 * v:.2f}'  # noqa: E731
  lines = [f'Detector `{d["detector"]}` ({", ".join(d["squeezers"])}): threshold '
           f'{d["threshold"]:.4g}, set at FPR {pct(d["fpr"])}% on {d["calibration_examples"]} '
           f'{d["calibration"]} (realised {pct(d["calibration_fpr"])}%); FPR on the clean test '
           f'set {pct(d["test_fpr"])}%. Accuracies above are with abstention: a rejected clean '
           'input is an error; an example is defended when its clean input is right and '
           'accepted and its adversarial one is right or rejected. The classifier alone is '
           f'{pct(d["classifier_clean_accuracy"])}% accurate on clean inputs.', '',
           '| attack | detector-aware | classifier alone (%) | successful | detected | '
           'detection rate (%) | accuracy with abstention (%) |',
           '|---|---|---:|---:|---:|---:|---:|']
  for name, a in d['attacks'].items():
    lines.append(f'| {name} | {"yes" if a["detector_aware"] else "no"} | '
                 f'{pct(a["classifier_accuracy"])} | {a["successful"]} | {a["detected"]} | '
                 f'{pct(a["detection_rate"])} | {pct(results["attacks"][name]["accuracy"])} |')
  return '\n'.join(lines)


def full_report(results, title=None, images=None, console=False):
  """Markdown: results, suite, sanity checks and (unless console) links to the PNGs."""
  parts = [results_table(results, title)]
  if 'detection' in results:
    parts.append(detection_table(results))
  if 'suite' in results:
    parts.append(suite_table(results))
  if 'sanity_checks' in results:
    parts.append(sanity_table(results))
    failed = [c['name'] for c in results['sanity_checks'] if c['verdict'] == 'FAIL']
    if failed:
      parts.append('**Sanity checks FAILED: ' + ', '.join(failed) + '. Do not trust the robust '
                   'accuracy above: the attacks may be fooled (gradient masking).**')
    skipped = [c['name'] for c in results['sanity_checks'] if c['verdict'] == 'SKIPPED']
    if skipped:
      parts.append('Sanity checks SKIPPED (could not run; reasons in the table): '
                   + ', '.join(skipped) + '.')
  if 'certify' in results:
    from robust_jax import certify  # pylint: disable=g-import-not-at-top
    parts.append(certify.table(results['certify']))
  if images and not console:
    parts += [f'![{name}]({path})' for name, path in images.items()]
  return '\n\n'.join(parts)


def write_plots(results, artifacts, workdir):
  """Writes eps_curve.png and examples.png into workdir; returns {title: file name}."""
  import os  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  out = {}
  curve = results.get('eps_curve')
  if curve:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(curve['eps'], [100 * a for a in curve['accuracy']], 'o-')
    ax.set_xlabel('eps'), ax.set_ylabel('robust accuracy (%)'), ax.set_ylim(-2, 102)
    ax.set_title('PGD-20 accuracy against eps'), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(os.path.join(workdir, 'eps_curve.png'), dpi=120)
    plt.close(fig)
    out['robust accuracy against eps'] = 'eps_curve.png'
  if artifacts and 'x' in artifacts:
    k = len(artifacts['y'])
    fig, axes = plt.subplots(2, k, figsize=(1.4 * k, 3.2), squeeze=False)
    for i in range(k):
      for row, (img, pred) in enumerate(((artifacts['x'][i], artifacts['pred'][i]),
                                         (artifacts['x_adv'][i], artifacts['pred_adv'][i]))):
        ax = axes[row][i]
        ax.imshow(img.squeeze(), cmap='gray' if img.shape[-1] == 1 else None, vmin=0, vmax=1)
        ok = pred == artifacts['y'][i]
        ax.set_title(f'{"ok" if ok else "x"} {pred} (y={artifacts["y"][i]})', fontsize=7,
                     color='green' if ok else 'red')
        ax.axis('off')
    fig.suptitle(f'clean (top) and {artifacts["attack"]} (bottom)', fontsize=8)
    fig.tight_layout(), fig.savefig(os.path.join(workdir, 'examples.png'), dpi=120)
    plt.close(fig)
    out['clean and adversarial examples'] = 'examples.png'
  if 'certify' in results:
    from robust_jax import certify  # pylint: disable=g-import-not-at-top
    out.update(certify.plot(results['certify'], workdir))
  return out


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
