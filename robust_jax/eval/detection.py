"""Feature-squeezing detection (Xu, Evans & Qi 2018), evaluated with abstention: the
detector (robust_jax/defenses/squeezing.py) in the loop of the robust evaluation.

    results, artifacts = detection.evaluate(model, params, batch_stats, dataset, config, mesh)

`evaluate` returns the schema of `robust_jax.eval.robust.evaluate` with the detector in the loop:
`clean_accuracy` counts an input as right when it is classified correctly and not rejected (a
rejected clean input is an error); `attacks[name].accuracy` counts an example as defended when its
clean input is right in that sense AND the attack's point is classified correctly or rejected (so
a clean input the classifier gets wrong, or the detector rejects, is never defended, and every
attack's accuracy is at most `clean_accuracy`; at eps = 0 it equals it); the worst case is the
per-example AND over the clean condition and every attack. A `detection` block adds the
threshold, the realised false-positive rate on the calibration and the clean test images, the
classifier's accuracies without the detector, and per attack the detection rate: of the attack's
successful adversarial examples (inputs the classifier alone gets right clean and wrong attacked,
whether or not the detector rejects the clean input), the fraction rejected.

"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from robust_jax import attacks
from robust_jax import errors
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax.attacks import threat
from robust_jax.defenses import squeezing
from robust_jax.eval import loop
from robust_jax.eval import sanity

_SLACK = 1e-5  # relative float tolerance of the ball check


def metric(cfg):
  """The attack's spec as a metric name, with '_detaware<c>' for a detector-aware attack."""
  c = attacks.validate(cfg)['detector_penalty']
  return attacks.describe(cfg) + (f'_detaware{c:g}' if c > 0 else '')


def make_eval_fn(model, attack_cfg, bn_mode, mesh, squeeze_fns, threshold):
  """Jitted `fn(params, batch_stats, images, labels, index, key) -> (correct, score, outside)`.

  `attack_cfg` None: the clean inputs. `correct: bool[B]` and `score: f32[B]` are the classifier's
  and the detector's on the returned points; `outside: bool[B]` flags points outside their
  eps-ball or [0,1]. `threshold` is used only by a detector-aware attack.
  """
  spec = None if attack_cfg is None else attacks.validate(attack_cfg)
  attack = None if attack_cfg is None else attacks.build(attack_cfg, load_model=run_io.load_model)

  def per_device(params, batch_stats, images, labels, index, key):
    x = images.astype(jnp.float32) / 255.0
    x_adv = x
    if attack is not None:
      seen = model_fns.logits_fn(model, params, batch_stats, bn_mode)
      if spec['detector_penalty'] > 0:
        seen = squeezing.detector_aware_logits_fn(seen, squeeze_fns, threshold, labels,
                                        spec['detector_penalty'])
      x_adv = attack(seen, x, labels, rng.example_keys(key, rng.ATTACK, index))
    f = model_fns.logits_fn(model, params, batch_stats, 'eval')
    logits = f(x_adv)
    flat = x_adv.reshape(x.shape[0], -1)
    outside = (flat.min(1) < 0) | (flat.max(1) > 1)
    if spec is not None:
      bound = spec['eps'] * (1 + _SLACK) + 1e-6
      outside = outside | (threat.distance(x_adv, x, spec['norm']) > bound)
    scores = squeezing.score(f, x_adv, squeeze_fns, logits)
    return jnp.argmax(logits, -1) == labels, scores, outside

  specs = (P(), P(), P('data'), P('data'), P('data'), P())
  return jax.jit(parallel.per_device(per_device, mesh, in_specs=specs,
                                     out_specs=(P('data'), P('data'), P('data'))))


_OUTPUTS = {'correct': np.bool_, 'score': np.float32, 'outside': np.bool_}


def _phase(fn, params, batch_stats, images, labels, batch_size, mesh, key, bar, store, name):
  """`fn` over all (images, labels) through the evaluation loop: (correct, score, outside) numpy
  arrays; with a `store`, the phase's finished batches are kept as `name`."""
  n = len(labels)
  out = loop.run(lambda b: fn(params, batch_stats, b['x'], b['y'], b['i'], key),
                 {'x': images, 'y': labels, 'i': np.arange(n, dtype=np.int32)}, np.arange(n),
                 batch_size, _OUTPUTS, mesh=mesh, bar=bar, store=store, phase=name)
  return [out[k] for k in _OUTPUTS]


def abstention(clean_correct, clean_rejected, correct, rejected):
  """Accounting of one attack with abstention, from per-example bool[N] numpy arrays.

  `clean_correct`, `clean_rejected`: the classifier is right on, and the detector rejects, the
  clean input; `correct`, `rejected`: the same on the attack's point. Returns (defended bool[N], a
  dict of the attack's detection figures). An example is defended when its clean input is
  classified correctly and accepted, and the attack's point is classified correctly or rejected:
  a rejection only defends an input the deployed model got right, so defended <= clean accepted
  and correct, with equality when the attack returns the clean inputs.
  """
  success = clean_correct & ~correct
  detected = int((success & rejected).sum())
  defended = clean_correct & ~clean_rejected & (correct | rejected)
  return defended, {
      'classifier_accuracy': float(correct.mean()), 'rejected': int(rejected.sum()),
      'successful': int(success.sum()), 'detected': detected,
      'detection_rate': detected / int(success.sum()) if success.any() else None}


def evaluate(model, params, batch_stats, dataset, config, mesh, progress=True,
             progress_dir=None):
  """Returns (results, artifacts) like `robust_jax.eval.robust.evaluate`, with the detector.

  progress_dir: where per-batch results are kept (loop.Progress), so that a killed evaluation
  resumes at its last finished batch with the same numbers; None keeps nothing.

  results keys: num_examples, clean_accuracy, attacks {name: {accuracy, correct, metric, ...}},
  worst_case_accuracy, worst_case_correct, detection {...}, sanity_checks, eps_curve,
  eval_seconds (see the module docstring for what counts as correct).
  """
  f = squeezing.fields(config)
  if model_fns.is_random(model):
    raise errors.ConfigError(f'defense.name={config.defense.name!r} needs a deterministic '
                             'classifier; this model is random.')
  named = [(k, dict(v)) for k, v in config.eval.attacks.items()]
  specs = {k: attacks.validate(c, f'eval.attacks.{k}') for k, c in named}
  squeeze = squeezing.squeezers(f['squeeze_bits'], f['squeeze_median'])
  fns = [s for _, s in squeeze]
  cal_x, cal_y = squeezing.calibration_set(config, dataset)
  n = len(dataset.test_labels) if config.eval.num_examples <= 0 else min(
      config.eval.num_examples, len(dataset.test_labels))
  images, labels = dataset.test_images[:n], dataset.test_labels[:n]
  bn = loop.BN_MODE  # attack the scored model
  root = rng.root_key(config.seed, rng.EVAL)
  bar = loop.progress_bar(len(cal_y) + n * (1 + len(named)), 'eval', progress)
  t_all = time.perf_counter()
  store = loop.store_for(progress_dir, config, params, batch_stats)

  def run(fn, x, y, key, phase):
    return _phase(fn, params, batch_stats, x, y, config.eval.batch_size, mesh, key, bar, store,
                  phase)

  clean_fn = make_eval_fn(model, None, bn, mesh, fns, None)
  _, cal_scores, _ = run(clean_fn, cal_x, cal_y, root, 'detector-calibration')
  t = squeezing.threshold_at_fpr(cal_scores, f['fpr'])
  clean_ok, clean_s, _ = run(clean_fn, images, labels, root, 'detector-clean')
  clean_rejected = clean_s > np.float32(t)
  accepted_ok = clean_ok & ~clean_rejected
  results = {'num_examples': n, 'clean_accuracy': float(accepted_ok.mean()), 'attacks': {}}
  det = _detection_block(config, squeeze, t, f['fpr'], cal_scores, clean_ok, clean_rejected)
  classifier_ok, defended, violations = _run_attacks(
      run, lambda cfg: make_eval_fn(model, cfg, bn, mesh, fns, t), named, specs, images, labels,
      (clean_ok, clean_rejected), t, root, bar, results['attacks'], det['attacks'])
  bar.close()
  # Per example: accepted and right on the clean input, and defended under every attack.
  worst = np.logical_and.reduce([accepted_ok] + list(defended.values()))
  results['worst_case_accuracy'] = float(worst.mean())
  results['worst_case_correct'] = int(worst.sum())
  results['detection'] = det
  if config.eval.sanity_checks:
    checks, results['eps_curve'] = _classifier_checks(
        model, params, batch_stats, images, labels, config, named, specs, classifier_ok,
        (violations, n * len(named)), root)
    results['sanity_checks'] = checks + detection_checks(results, specs, n)
  results['eval_seconds'] = time.perf_counter() - t_all
  return results, {}


def _run_attacks(run, make_fn, named, specs, images, labels, clean, t, root, bar, out, det):
  """Each attack of `named` on the test images, the detector in the loop.

  Fills `out` (results['attacks']) and `det` (results['detection']['attacks']) per attack;
  `clean` = (clean_ok, clean_rejected), bool[n]. Returns (classifier correct {name: bool[n]},
  defended {name: bool[n]}, points outside their ball).
  """
  clean_ok, clean_rejected = clean
  classifier_ok, defended, violations = {}, {}, 0
  for a_i, (name, cfg) in enumerate(named):
    bar.set_description(f'eval {name}')
    t0 = time.perf_counter()
    # The same key as the robust evaluation's: a naive attack returns the same points there.
    ok, s, outside = run(make_fn(cfg), images, labels,
                         jax.random.fold_in(root, rng.EVAL_ATTACKS + a_i),
                         f'detector-attack-{name}')
    classifier_ok[name], violations = ok, violations + int(outside.sum())
    defended[name], det[name] = abstention(clean_ok, clean_rejected, ok, s > np.float32(t))
    det[name]['detector_aware'] = specs[name]['detector_penalty'] > 0
    out[name] = {
        'accuracy': float(defended[name].mean()), 'correct': int(defended[name].sum()),
        'metric': metric(cfg), 'seconds': time.perf_counter() - t0, **specs[name]}
  return classifier_ok, defended, violations


def _detection_block(config, squeeze, t, fpr, cal_scores, clean_ok, clean_rejected):
  """results['detection'] before the attacks: the detector, its threshold and realised FPRs."""
  return {'detector': config.defense.name, 'squeezers': [name for name, _ in squeeze],
          'threshold': t, 'fpr': fpr, 'calibration': 'last training images (held out)',
          'calibration_examples': len(cal_scores),
          'calibration_fpr': float((cal_scores > np.float32(t)).mean()),
          'test_fpr': float(clean_rejected.mean()),
          'classifier_clean_accuracy': float(clean_ok.mean()), 'attacks': {}}


def _classifier_checks(model, params, batch_stats, images, labels, config, named, specs,
                       classifier_ok, ball, root):
  """The gradient-masking checks of eval/sanity.py on the classifier alone (naive attacks)."""
  m = min(config.eval.sanity_examples, len(labels))
  x, y = images[:m].astype(np.float32) / 255.0, labels[:m]
  fn = model_fns.logits_fn(model, params, batch_stats, loop.BN_MODE)
  naive = [(k, c) for k, c in named if specs[k]['detector_penalty'] == 0]
  iterative = [(k, c) for k, c in naive if c['name'] != 'fgsm']
  single = [k for k, c in naive if c['name'] == 'fgsm']
  primary = max(iterative, key=lambda kc: kc[1].get('steps', 1) * kc[1].get('restarts', 1),
                default=None)
  threat_cfg = specs[primary[0] if primary else named[0][0]]
  checks, curve = sanity.run_checks(
      fn, x, y, norm=threat_cfg['norm'], eps=threat_cfg['eps'],
      key=jax.random.fold_in(root, rng.EVAL_SANITY),
      primary=None if primary is None else (primary[1], classifier_ok[primary[0]][:m]),
      single_step=classifier_ok[single[0]][:m] if single and primary else None,
      violations=ball[0], checked_points=ball[1], load_model=run_io.load_model)
  for c in checks:
    c['detail'] = 'classifier alone: ' + c['detail']
    c['subset'] = m
  return checks, curve


def _check(name, verdict, figure, detail, subset):
  return {'name': name, 'verdict': verdict, 'figure': figure, 'detail': detail, 'subset': subset}


def detection_checks(results, specs, n):
  """A detector-aware attack ran and beat the naive ones; the calibrated FPR held on test."""
  aware = [k for k in specs if specs[k]['detector_penalty'] > 0]
  naive = [k for k in specs if k not in aware]
  acc = {k: results['attacks'][k]['accuracy'] for k in specs}
  checks = []
  if not aware:
    checks.append(_check('detector-aware attack', sanity.FAIL, 0.0,
                         'no attack sets detector_penalty > 0: naive attacks ignore the detector '
                         'and overstate what it stops', n))
  else:
    checks.append(_check('detector-aware attack', sanity.PASS, float(len(aware)),
                         'attacks with detector_penalty > 0', n))
  if aware and naive:
    gap = 100 * (min(acc[k] for k in aware) - min(acc[k] for k in naive))
    verdict = sanity.PASS if gap <= 0 else (sanity.WARN if gap <= 1 else sanity.FAIL)
    checks.append(_check('detector-aware beats naive', verdict, gap,
                         'accuracy with abstention under the best detector-aware attack minus '
                         'under the best naive one (points; > 0: raise its steps or '
                         'detector_penalty)', n))
  det = results['detection']
  fpr = det['fpr']
  tol = 3 * math.sqrt(fpr * (1 - fpr) * (1 / n + 1 / det['calibration_examples']))
  checks.append(_check('calibrated FPR holds on test', sanity.PASS if det['test_fpr'] <= fpr + tol
                       else sanity.WARN, 100 * det['test_fpr'],
                       f'clean test images rejected (%); calibrated at {100 * fpr:g}% '
                       f'(3-sigma tolerance {100 * tol:.2f} points)', n))
  return checks


# --- The report's section on the detector ---


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


def render(results, title=None):
  """[the detector's table] for a detector's evaluation, else []."""
  del title
  return [detection_table(results)] if 'detection' in results else []
