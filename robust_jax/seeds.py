"""The same experiment over several seeds: mean, spread and range of every figure.

    python launch.py --seeds=0,1,2 --workdir=workdirs/demo_seeds   # WORKDIR/seed_<s>/ each,
                                                                    # then WORKDIR/seeds.json, .md

A single run's figures move with the seed (initialisation, batch order, attack starts) and, in
the last bits, with the CPU family (AVX2 against AVX-512 kernels). A headline figure is therefore
quoted as the mean and sample standard deviation over seeds, each seed's own figure beside it.
Pure functions of results dicts; launch.py runs the seeds.
"""

import json
import os

import numpy as np

from robust_jax import report


def figures(results):
  """{label: fraction} of one results dict: clean, each attack, the suite and the worst case."""
  out = {'clean': results['clean_accuracy']}
  for name, a in results.get('attacks', {}).items():
    out[f'{name} ({a["metric"]})'] = a['accuracy']
  if results.get('suite'):
    out[f'suite {results["suite"]["name"]}'] = results['suite']['accuracy']
  out['worst case'] = results['worst_case_accuracy']
  return out


def aggregate(seed_results):
  """{'seeds': [...], 'num_examples', 'figures': {label: {mean, std, min, max, per_seed}}}.

  seed_results: [(seed, results dict)]; every run must report the same figures on the same
  number of examples (else ValueError naming the difference). std is the sample standard
  deviation (ddof=1; 0 for one seed).
  """
  if not seed_results:
    raise ValueError('no seed has results')
  ns = {r['num_examples'] for _, r in seed_results}
  if len(ns) != 1:
    raise ValueError(f'the seeds evaluated different numbers of examples: {sorted(ns)}')
  per = [(s, figures(r)) for s, r in seed_results]
  labels = list(per[0][1])
  for s, f in per[1:]:
    if list(f) != labels:
      raise ValueError(f'seed {s} reports {list(f)}, seed {per[0][0]} {labels}')
  out = {}
  for label in labels:
    v = np.array([f[label] for _, f in per], np.float64)
    out[label] = {'mean': float(v.mean()), 'std': float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                  'min': float(v.min()), 'max': float(v.max()), 'per_seed': v.tolist()}
  agg = {'seeds': [s for s, _ in seed_results], 'num_examples': ns.pop(), 'figures': out}
  if 'test_split' in seed_results[0][1]:
    agg['test_split'] = seed_results[0][1]['test_split']
  return agg


def table(agg):
  """Markdown: one row per figure, mean +- std and each seed's value, in %."""
  seeds = agg['seeds']
  lines = ['| evaluation | mean (%) | std (points) | ' + ' | '.join(f'seed {s}' for s in seeds)
           + ' |', '|---|---:|---:|' + '---:|' * len(seeds)]
  for label, f in agg['figures'].items():
    lines.append(f'| {label} | {100 * f["mean"]:.2f} | {100 * f["std"]:.2f} | '
                 + ' | '.join(f'{100 * v:.2f}' for v in f['per_seed']) + ' |')
  lines += ['', f'Over {len(seeds)} seeds ({", ".join(map(str, seeds))}), '
            f'{report.on_test_images(agg)} each; std is the sample standard deviation.']
  return '\n'.join(lines)


def seed_workdir(workdir, seed):
  return os.path.join(workdir, f'seed_{seed}')


def write(workdir, seeds):
  """Reads WORKDIR/seed_<s>/results.json of each seed; writes seeds.json and seeds.md."""
  runs = []
  for s in seeds:
    with open(os.path.join(seed_workdir(workdir, s), 'results.json')) as f:
      runs.append((s, json.load(f)))
  agg = aggregate(runs)
  agg['code_versions'] = sorted({r.get('code_version', 'unknown') for _, r in runs})
  agg['machines'] = sorted({r.get('machine', 'unknown') for _, r in runs})
  with open(os.path.join(workdir, 'seeds.json'), 'w') as f:
    json.dump(agg, f, indent=2, sort_keys=True)
  text = table(agg)
  with open(os.path.join(workdir, 'seeds.md'), 'w') as f:
    f.write(text + '\n')
  return agg, text


def parse(text):
  """'0,1,2' -> [0, 1, 2]; a clear ValueError otherwise."""
  try:
    seeds = [int(s) for s in text.split(',') if s.strip()]
  except ValueError:
    raise ValueError(f'--seeds={text!r}: expected comma-separated integers, e.g. 0,1,2') from None
  if len(set(seeds)) != len(seeds) or not seeds:
    raise ValueError(f'--seeds={text!r}: give distinct seeds, e.g. 0,1,2')
  return seeds
