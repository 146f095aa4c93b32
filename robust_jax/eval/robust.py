"""Robust evaluation: clean accuracy, each attack, an attack suite, the per-example worst case,
and the sanity checks (sanity.py) and certification (certify.py) when the config asks for them.

    results, artifacts = robust.evaluate(model, params, batch_stats, dataset, config, mesh)
    results, artifacts = robust.evaluate_target(target, images, labels, config, mesh)
    robust.render(results, title)                        # [the accuracy table], Markdown

`evaluate_target` is the evaluation of any model (`target.Target`: a flax model with its weights,
or any JAX logits function, which robust_jax.evaluate passes; api.py); `evaluate` is it on a
robust_jax model and the first `eval.num_examples` test images, with certification.

Every test example is counted exactly once (batches are padded and masked by the evaluation loop,
loop.py); accuracies are sums of correct counts over the number of examples, never averages of
batch averages. Each example's attack randomness is a function of (seed, attack, example index),
so results do not depend on the batch size or the number of devices. Accuracy is always
recomputed on the points the attack returned, and each returned point is checked to lie in its
eps-ball and in [0,1]. The suite runs as a cascade (each attack on the points still robust); an
attack in stages (the targets of APGD-T and FAB-T, blocks of Square's queries) runs each stage only
on the examples not yet fooled, and short subsets run in a smaller fixed batch size (loop.py), so
each example's verdict is that of the whole attack while the work shrinks with the robust points.

An evaluation attacks exactly the model it scores: the network in inference mode (BatchNorm with
its running statistics, `loop.BN_MODE`), whatever `model.attack_bn_mode` says for the training
attack, so no example's result depends on the other examples of its batch or on padding.
"""

import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks
from robust_jax import rng
from robust_jax import run_io
from robust_jax import suites
from robust_jax.eval import batch_fns
from robust_jax.eval import certify
from robust_jax.eval import loop
from robust_jax.eval import sanity
from robust_jax.eval import target as target_lib

BN_MODE = loop.BN_MODE  # evaluations attack and score the inference-mode model
_OUTPUTS = {'correct': np.bool_, 'outside': np.bool_}


# The per-batch functions live in batch_fns.py.
unit_images = batch_fns.unit_images
make_eval_fn = batch_fns.make_eval_fn
target_eval_fn = batch_fns.target_eval_fn
make_staged_eval_fns = batch_fns.make_staged_eval_fns


def _eval_set(dataset, num_examples):
  n = len(dataset.test_labels)
  n = n if num_examples <= 0 else min(num_examples, n)
  return dataset.test_images[:n], dataset.test_labels[:n]


def _suite_cfgs(config):
  if not config.eval.suite:
    return []
  return suites.attacks(config.eval.suite, norm=config.eval.suite_norm, eps=config.eval.suite_eps)


def _phase_runner(tgt, images, labels, mesh, batch_size, bar, store):
  """`phase(cfg, subset, key, name) -> (correct, outside)`, bool[len(subset)] each: attack `cfg`
  (None: clean) on the test examples `subset`, through the evaluation loop (stored as `name`).
  A short subset runs in smaller fixed batch sizes (`loop.bucket_sizes`), below MIN_BUCKET rows
  only on one device, for a deterministic model without an input transformation whose bits
  `loop.batch_invariance` finds the same at that size; an attack in stages runs each stage only on
  the examples no earlier stage fooled (`loop.run_staged`)."""
  arrays = {'x': images, 'y': labels, 'i': np.arange(len(labels), dtype=np.int32)}
  devices = 1 if mesh is None else mesh.devices.size
  small_ok = None
  if devices == 1 and not tgt.random and tgt.transform is None:
    probe = np.resize(np.asarray(images[:loop.MIN_BUCKET]),
                      (loop.MIN_BUCKET,) + tuple(images.shape[1:]))
    small_ok = loop.batch_invariance(tgt.apply, tgt.variables, unit_images(probe))

  def phase(cfg, subset, key, name):
    buckets = loop.bucket_sizes(batch_size, devices, len(subset), small_ok)
    staged = None if cfg is None else make_staged_eval_fns(tgt.apply, cfg, mesh)
    if staged is None:
      fn = target_eval_fn(tgt.apply, cfg, mesh)
      out = loop.run(lambda b: fn(tgt.variables, b['x'], b['y'], b['i'], key), arrays,
                     subset, batch_size, _OUTPUTS, mesh=mesh, bar=bar, store=store, phase=name,
                     buckets=buckets)
      return out['correct'], out['outside']
    shapes = staged.carry(tgt.variables, *(
        jax.ShapeDtypeStruct((batch_size,) + a.shape[1:], a.dtype) for a in arrays.values()), key)
    spec = [(np.dtype(c.dtype), c.shape[1:]) for c in shapes]
    num_classes = jax.eval_shape(tgt.apply(tgt.variables),
                                 jax.ShapeDtypeStruct((1,) + images.shape[1:], jnp.float32))

    def step(b, s):
      carry = tuple(b[f'carry{j}'] for j in range(len(spec)))
      return staged.step(tgt.variables, b['x'], b['y'], b['i'], key, carry, s)

    out = loop.run_staged(step, staged.num_stages(num_classes.shape[-1]), arrays, subset,
                          batch_size, spec, _OUTPUTS, buckets=buckets, mesh=mesh, bar=bar,
                          store=store, phase=name)
    return out['correct'], out['outside']

  return phase


def evaluate(model, params, batch_stats, dataset, config, mesh, progress=True,
             progress_dir=None):
  """Returns (results dict, artifacts dict) for `config.eval` on a robust_jax model: the
  evaluation of `evaluate_target` on the first `eval.num_examples` test images, and the
  certification when `eval.certify` asks for it.

  progress_dir: where per-batch results are kept (see `loop.Progress`); a rerun after a kill
  skips the batches already done. None: nothing is kept.
  """
  t_all = time.perf_counter()
  images, labels = _eval_set(dataset, config.eval.num_examples)
  store = loop.store_for(progress_dir, config, params, batch_stats)
  results, artifacts = evaluate_target(target_lib.of_flax(model, params, batch_stats), images,
                                       labels, config, mesh, progress, store)
  if config.eval.get('certify') and config.eval.certify.examples > 0:
    results['certify'] = certify.run(model, params, batch_stats, dataset, config, mesh, progress,
                                     store)
  results['eval_seconds'] = time.perf_counter() - t_all
  return results, artifacts


def evaluate_target(tgt, images, labels, config, mesh, progress=True, store=None):
  """Returns (results dict, artifacts dict) for `config.eval` (and `config.seed`) on `tgt`.

  tgt: a `target.Target`, its variables placed on `mesh`. images: uint8 (0..255) or floats in
  [0,1], [n,H,W,C]; labels: int[n]; every example is evaluated. store: a `loop.Progress`, or None.

  artifacts: the example images for the report's plots (when the sanity checks ran) and
  'per_example': {'clean', 'attack/<name>', 'suite', 'worst_case': bool[n]} per test example.

  results keys: num_examples, clean_accuracy, clean_correct, attacks {name: {accuracy, correct,
  metric, ...}}, suite {name, accuracy, correct, attacks: [...]}, worst_case_accuracy,
  worst_case_correct, sanity_checks [...], eps_curve, eval_seconds.
  """
  n = len(labels)
  everyone = np.arange(n)
  named = [(k, dict(v)) for k, v in config.eval.attacks.items()]
  suite = _suite_cfgs(config)
  root = rng.root_key(config.seed, rng.EVAL)
  bar = loop.progress_bar(n * (1 + len(named)), 'eval', progress)
  t_all = time.perf_counter()
  phase = _phase_runner(tgt, images, labels, mesh, config.eval.batch_size, bar, store)
  clean, _ = phase(None, everyone, root, 'clean')
  results = {'num_examples': n, 'clean_accuracy': float(clean.mean()),
             'clean_correct': int(clean.sum()), 'attacks': {}}
  correct, ball = _named_attacks(phase, named, everyone, root, bar, results['attacks'])
  worst = np.logical_and.reduce([clean] + list(correct.values()))
  cascade = _Cascade(None, None, None, None, ball)
  if suite:
    cascade = _suite(phase, config.eval.suite, suite, clean, root, bar, ball)
    results['suite'] = {**cascade.results, 'correct': int(cascade.robust.sum())}
    worst &= cascade.robust
  results['worst_case_accuracy'] = float(worst.mean())
  results['worst_case_correct'] = int(worst.sum())
  bar.close()

  # Per-example outcomes (not written to results.json): what the counts above are sums of.
  per_example = {'clean': clean, **{f'attack/{k}': v for k, v in correct.items()},
                 'worst_case': worst}
  if suite:
    per_example['suite'] = cascade.robust
  artifacts = {}
  if config.eval.sanity_checks:
    results['sanity_checks'], results['eps_curve'], artifacts = _sanity(
        tgt, images, labels, config, named, suite, correct, cascade.square, cascade.ball, root,
        clean, cascade.first)
  results['eval_seconds'] = time.perf_counter() - t_all
  return results, {**artifacts, 'per_example': per_example}


def _named_attacks(phase, named, everyone, root, bar, out):
  """Runs each of `eval.attacks` on every example, filling `out[name]`; returns ({name: correct
  bool[n]}, (points outside their ball, points checked))."""
  correct, violations, checked = {}, 0, 0
  for a_i, (name, cfg) in enumerate(named):
    bar.set_description(f'eval {name}')
    t0 = time.perf_counter()
    ok, outside = phase(cfg, everyone, jax.random.fold_in(root, rng.EVAL_ATTACKS + a_i),
                        f'attack-{name}')
    correct[name] = ok
    violations, checked = violations + int(outside.sum()), checked + len(everyone)
    out[name] = {
        'accuracy': float(ok.mean()), 'correct': int(ok.sum()), 'metric': attacks.describe(cfg),
        'seconds': time.perf_counter() - t0, **attacks.validate(cfg, f'eval.attacks.{name}')}
  return correct, (violations, checked)


class _Cascade(NamedTuple):
  results: Any      # results['suite']
  robust: Any       # bool[n]: clean-correct and robust to every attack of the suite
  square: Any       # (white-box robust, robust after Square) bool[n] each, when Square ran
  first: Any        # (name, config, bool[n] robust) of the suite's first attack
  ball: Any         # (points outside their ball, points checked), the named attacks' included


def _suite(phase, suite_name, suite, clean, root, bar, ball):
  """The attack suite as a cascade: each attack runs on the points still robust."""
  violations, checked = ball
  robust = clean.copy()
  bar.total += int(clean.sum()) * len(suite)
  entries, square, first = [], None, None
  for s_i, (name, cfg) in enumerate(suite):
    bar.set_description(f'{suite_name} {name}')
    t0 = time.perf_counter()
    todo = np.flatnonzero(robust)
    if name == 'square':
      white_box = robust.copy()
    ok, out = phase(cfg, todo, jax.random.fold_in(root, rng.EVAL_SUITE + s_i),
                    f'suite-{suite_name}-{name}')
    violations, checked = violations + int(out.sum()), checked + len(todo)
    robust[todo] = ok
    if s_i == 0:  # the first attack saw every clean-correct point: exact per example
      first = (name, cfg, robust.copy())
    if name == 'square':
      square = (white_box, robust.copy())
    entries.append({'name': name, 'metric': attacks.describe(cfg), 'attacked': len(todo),
                    'broken': int((~ok).sum()), 'accuracy_after': float(robust.mean()),
                    'seconds': time.perf_counter() - t0, **attacks.validate(cfg)})
  results = {'name': suite_name, 'accuracy': float(robust.mean()), 'attacks': entries}
  return _Cascade(results, robust, square, first, (violations, checked))


def _primary(named, first, correct, n):
  """(name, config, bool[n] robust per example) of the strongest iterative attack that ran on
  every example: a named attack or the suite's first one, by steps x restarts; or None."""
  candidates = [(k, c, correct[k]) for k, c in named if c['name'] != 'fgsm']
  if first is not None:
    candidates.append(first)
  if not candidates:
    return None
  best = max(candidates, key=lambda kc: kc[1].get('steps', 1) * kc[1].get('restarts', 1))
  assert len(best[2]) == n
  return best


def _sanity(tgt, images, labels, config, named, suite, correct, square, ball, root, clean,
            first):
  """Sanity checks on the first `eval.sanity_examples` points (single device)."""
  m = min(config.eval.sanity_examples, len(labels))
  x = unit_images(images[:m])
  y = labels[:m]
  # The model as a naive attacker sees it: masked gradients show up in these checks.
  logits_fn = tgt.apply(tgt.variables)
  best = _primary(named, first, correct, len(labels))
  p_cfg = None if best is None else best[1]
  primary_fn = logits_fn
  if p_cfg is not None:  # the primary attack's own view (BPDA, EOT) for its re-runs
    p_spec = attacks.validate(p_cfg)
    primary_fn = tgt.apply(tgt.variables, samples=p_spec['eot_samples'], bpda=p_spec['bpda'])
  primary = None if best is None else (p_cfg, best[2][:m])
  single = [(k, c) for k, c in named if c['name'] == 'fgsm']
  single_step = (attacks.describe(single[0][1]), correct[single[0][0]][:m]) if single else None
  specs = [attacks.validate(c) for _, c in named + list(suite)]
  eot = [f['eot_samples'] for f in specs]
  bpda = [f['bpda'] for f in specs]
  random_fn = None
  if tgt.random:
    random_fn = lambda v, k: tgt.apply(  # noqa: E731
        tgt.variables, keys=jax.random.split(k, v.shape[0]))(v)
  threat_cfg = p_cfg or (named[0][1] if named else dict(norm=config.eval.suite_norm,
                                                        eps=config.eval.suite_eps))
  checks, curve = sanity.run_checks(
      logits_fn, x, y, norm=threat_cfg.get('norm', 'linf'), eps=threat_cfg['eps'],
      key=jax.random.fold_in(root, rng.EVAL_SANITY), primary=primary, single_step=single_step,
      square=square, violations=ball[0], checked_points=ball[1],
      random_logits_fn=random_fn, eot_samples=max(eot, default=1), primary_logits_fn=primary_fn,
      clean_correct=clean[:m], load_model=run_io.load_model)
  if tgt.transform is not None:
    t = tgt.transform
    checks.append((sanity.check_transform_attacked(
        t.name, t.differentiable, t.random, any(bpda), any(e > 1 for e in eot))))
  for c in checks:
    c['subset'] = m
  artifacts = {}
  if p_cfg is not None:
    k = min(8, m)
    keys = jax.random.split(jax.random.fold_in(root, rng.EVAL_SAMPLES), k)
    x_adv = np.asarray(attacks.build(p_cfg, load_model=run_io.load_model)(
        logits_fn, jnp.asarray(x[:k]), jnp.asarray(y[:k]), keys))
    artifacts = {'x': x[:k], 'x_adv': x_adv, 'y': y[:k], 'attack': attacks.describe(p_cfg),
                 'pred': np.asarray(jnp.argmax(logits_fn(jnp.asarray(x[:k])), -1)),
                 'pred_adv': np.asarray(jnp.argmax(logits_fn(jnp.asarray(x_adv)), -1))}
  return checks, curve, artifacts


# --- The report's sections on these results ---


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
  caveat = worst_case_caveat(results)
  if caveat:
    lines += ['', caveat]
  return '\n'.join(lines)


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


def render(results, title=None):
  """[the accuracy table] (every evaluation has one)."""
  return [results_table(results, title)]


def render_suite(results, title=None):
  """[the suite's cascade] when a suite ran, else []."""
  del title
  return [suite_table(results)] if 'suite' in results else []


def plots(results, artifacts, workdir):
  """Writes examples.png (clean and adversarial examples) when the evaluation kept some;
  returns {title: file name}."""
  del results
  if not artifacts or 'x' not in artifacts:
    return {}
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
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
  return {'clean and adversarial examples': 'examples.png'}
