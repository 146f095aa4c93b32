"""Feature-squeezing detection (Xu, Evans & Qi 2018), evaluated with abstention.

The detector compares a classifier's prediction on an input with its predictions on squeezed
copies of it (colour bit-depth reduction, a small median filter):

    score(x) = max_s || softmax(f(x)) - softmax(f(s(x))) ||_1          in [0, 2]

and rejects the input (the deployed model abstains) when score(x) > threshold. The threshold is
the score that a fraction `defense.fpr` of clean held-out images exceed: the last
`defense.calibration_examples` training images, which `training_data` keeps out of training.

    results, artifacts = detection.evaluate(model, params, batch_stats, dataset, config, mesh)

`evaluate` returns the schema of `robust_jax.evaluate.evaluate` with the detector in the loop:
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

Attacks in `eval.attacks` are naive (they see the classifier alone) unless they set
`detector_penalty: c > 0`. Those attack the detector too, as Carlini & Wagner 2017 ("Adversarial
examples are not easily detected") do: they see the logits

    z'(x) = z(x) + onehot(y) * c * relu(score(x) - threshold)

so a margin or CE loss of z' must also bring the score under the threshold. Following He et al.
2017 ("Adversarial example defenses: ensembles of weak defenses are not strong"), the gradient of
the first term is that of the mean of z(x) and z(s(x)) over the squeezers: the attack must fool
the squeezed inputs too, else the score stays high. (On the toy model of tests/test_detection.py,
the penalty alone, with the gradient of z(x), leaves every point detected.) The bit-depth
squeezer is differentiated through BPDA with the identity (Athalye et al. 2018); the median is
differentiated as it is. Points the detector rejects also get a constant added to the true logit
(no gradient) that makes them count as correct in z', so the attack's best-iterate and restart
choices select undetected misclassified points. A large c walls the attack in (crossing the
decision boundary raises the score); c of a few logits per unit of score works best on the toy.
Reported numbers are always recomputed with the true classifier and detector on the returned
points.
"""

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from robust_jax import attacks
from robust_jax import data as data_lib
from robust_jax import errors
from robust_jax import evaluate as evaluate_lib
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax import sanity
from robust_jax.attacks import threat
from robust_jax.attacks import wrappers
from robust_jax.defenses import squeezing
from robust_jax.defenses import transforms

# The detector's config fields live with the defenses (defenses/squeezing.py); kept here too.
DETECTORS = squeezing.DETECTORS
DEFAULTS = squeezing.DEFAULTS
fields = squeezing.fields
_LIFT = 0.01  # how far a rejected point's true logit is put above the others in z'
_SLACK = 1e-5  # relative float tolerance of the ball check


def squeezers(bits, median):
  """[(name, squeeze)]: `squeeze(x) -> x'`, x: f32[B,H,W,C] in [0,1], same shape out.

  Bit depth is wrapped in BPDA: its value is the rounding, its gradient the identity's.
  """
  out = []
  if bits:
    out.append((f'bit_depth_{bits}', wrappers.bpda(lambda v: transforms.bit_depth(v, bits))))
  if median:
    out.append((f'median_{median}x{median}', lambda v: transforms.median_filter(v, median)))
  return out


def score(logits_fn, x, squeeze_fns, logits=None):
  """f32[B]: max over squeezers of the L1 distance between the softmax outputs.

  `logits_fn: x -> f32[B,K]`; `logits`: logits_fn(x) if already computed.
  """
  z = logits_fn(x) if logits is None else logits
  return _distance(z, [logits_fn(s(x)) for s in squeeze_fns])


def _distance(logits, squeezed):
  p = jax.nn.softmax(logits, axis=-1)
  return jnp.max(jnp.stack([jnp.sum(jnp.abs(p - jax.nn.softmax(q, axis=-1)), axis=-1)
                            for q in squeezed]), axis=0)


def threshold_at_fpr(scores, fpr):
  """The smallest calibration score t with at most floor(fpr * N) of the N scores above it.

  Inputs are rejected when score > t, so exactly floor(fpr * N) calibration inputs are rejected
  when no scores tie. Returns a float that is exact in float32.
  """
  s = np.sort(np.asarray(scores, np.float32))
  k = int(math.floor(fpr * len(s) + 1e-9))
  return float(s[len(s) - 1 - min(k, len(s) - 1)])


def detector_aware_logits_fn(logits_fn, squeeze_fns, threshold, y, penalty):
  """The classifier as a detector-aware attack sees it, for the batch with labels `y: int[B]`.

  Returns `x: f32[B,H,W,C] -> f32[B,K]`, only valid on the batch of `y` (the attacks call it on
  that batch, or on restarts of it under vmap). Its value is z'(x) of the module docstring; its
  gradient is that of mean(z(x), z(s_1(x)), ...) plus the penalty, so the attack must fool the
  squeezed inputs too (He et al. 2017).
  """

  def fn(x):
    if x.shape[0] != y.shape[0]:
      raise ValueError(f'detector-aware logits: batch of {x.shape[0]} inputs, {y.shape[0]} labels.')
    z = logits_fn(x)
    members = [z] + [logits_fn(s(x)) for s in squeeze_fns]
    s = _distance(z, members[1:])
    onehot = jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
    grad_view = jnp.mean(jnp.stack(members), axis=0)
    bonus = penalty * jax.nn.relu(s - threshold)
    true = jnp.sum(onehot * z, axis=-1) + bonus
    other = jnp.max(jnp.where(onehot > 0, -jnp.inf, z), axis=-1)
    lift = jnp.where(s > threshold, jax.nn.relu(other - true) + _LIFT, 0.0)
    value = z + onehot * (bonus + lift)[:, None]
    grad_view = grad_view + onehot * bonus[:, None]
    return grad_view + jax.lax.stop_gradient(value - grad_view)

  return fn


def calibration_set(config, dataset):
  """(uint8[N,H,W,C], int32[N]): the last `defense.calibration_examples` training images."""
  n = fields(config)['calibration_examples']
  if n >= len(dataset.train_labels):
    raise errors.ConfigError(
        f'defense.calibration_examples={n} leaves no training images of the '
        f'{len(dataset.train_labels)}; use fewer.')
  return dataset.train_images[-n:], dataset.train_labels[-n:]


def training_data(config, dataset):
  """The dataset to train on: without the calibration images for a detector, else `dataset`."""
  if config.defense.name not in DETECTORS:
    return dataset
  n = len(calibration_set(config, dataset)[1])
  return dataclasses.replace(dataset, train_images=dataset.train_images[:-n],
                             train_labels=dataset.train_labels[:-n])


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
        seen = detector_aware_logits_fn(seen, squeeze_fns, threshold, labels,
                                        spec['detector_penalty'])
      x_adv = attack(seen, x, labels, rng.example_keys(key, rng.ATTACK, index))
    f = model_fns.logits_fn(model, params, batch_stats, 'eval')
    logits = f(x_adv)
    flat = x_adv.reshape(x.shape[0], -1)
    outside = (flat.min(1) < 0) | (flat.max(1) > 1)
    if spec is not None:
      bound = spec['eps'] * (1 + _SLACK) + 1e-6
      outside = outside | (threat.distance(x_adv, x, spec['norm']) > bound)
    return jnp.argmax(logits, -1) == labels, score(f, x_adv, squeeze_fns, logits), outside

  specs = (P(), P(), P('data'), P('data'), P('data'), P())
  return jax.jit(parallel.per_device(per_device, mesh, in_specs=specs,
                                     out_specs=(P('data'), P('data'), P('data'))))


_OUTPUTS = {'correct': np.bool_, 'score': np.float32, 'outside': np.bool_}


def _run(fn, params, batch_stats, images, labels, batch_size, mesh, key, bar, store=None,
         phase=''):
  """`fn` over all (images, labels) in padded batches: (correct, score, outside) numpy arrays.

  With a `store` (evaluate.Progress), batches an earlier, killed run finished are read back and
  each new one is saved when done, as in evaluate.evaluate.
  """
  host_rows = data_lib.host_slice(batch_size, jax.process_index(), jax.process_count())
  n = len(labels)
  file_key, state = (None, evaluate_lib.blank_state(n, _OUTPUTS)) if store is None else (
      store.load(phase, np.arange(n), _OUTPUTS))
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    valid = len(idx)
    if state['done'][start:start + valid].all():
      if bar is not None:
        bar.update(valid)
      continue
    idx = np.concatenate([idx, np.zeros(batch_size - valid, idx.dtype)])  # pad; dropped below
    batch = parallel.shard_batch({'x': images[idx][host_rows], 'y': labels[idx][host_rows],
                                  'i': idx.astype(np.int32)[host_rows]}, mesh)
    got = fn(params, batch_stats, batch['x'], batch['y'], batch['i'], key)
    for name, a in zip(_OUTPUTS, got):
      state[name][start:start + valid] = np.asarray(
          multihost_utils.process_allgather(a, tiled=True))[:valid]
    state['done'][start:start + valid] = True
    if store is not None:
      store.save(phase, file_key, state)
    if bar is not None:
      bar.update(valid)
  return [state[name].copy() for name in _OUTPUTS]


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
  """Returns (results, artifacts) like `robust_jax.evaluate.evaluate`, with the detector.

  progress_dir: where per-batch results are kept (evaluate.Progress), so that a killed
  evaluation resumes at its last finished batch with the same numbers; None keeps nothing.

  results keys: num_examples, clean_accuracy, attacks {name: {accuracy, correct, metric, ...}},
  worst_case_accuracy, worst_case_correct, detection {...}, sanity_checks, eps_curve,
  eval_seconds (see the module docstring for what counts as correct).
  """
  f = fields(config)
  if model_fns.is_random(model):
    raise errors.ConfigError(f'defense.name={config.defense.name!r} needs a deterministic '
                             'classifier; this model is random.')
  named = [(k, dict(v)) for k, v in config.eval.attacks.items()]
  specs = {k: attacks.validate(c, f'eval.attacks.{k}') for k, c in named}
  squeeze = squeezers(f['squeeze_bits'], f['squeeze_median'])
  fns = [s for _, s in squeeze]
  cal_x, cal_y = calibration_set(config, dataset)
  n = len(dataset.test_labels) if config.eval.num_examples <= 0 else min(
      config.eval.num_examples, len(dataset.test_labels))
  images, labels = dataset.test_images[:n], dataset.test_labels[:n]
  bs, bn = config.eval.batch_size, evaluate_lib.BN_MODE  # attack the scored model
  root = rng.root_key(config.seed, rng.EVAL)
  bar = tqdm.tqdm(total=len(cal_y) + n * (1 + len(named)), desc='eval', unit='img',
                  dynamic_ncols=True, mininterval=2.0,
                  disable=not progress or jax.process_index() != 0)
  t_all = time.perf_counter()
  store = None
  if progress_dir:
    store = evaluate_lib.Progress(progress_dir,
                                  evaluate_lib.fingerprint(config, params, batch_stats))
  clean_fn = make_eval_fn(model, None, bn, mesh, fns, None)
  _, cal_scores, _ = _run(clean_fn, params, batch_stats, cal_x, cal_y, bs, mesh, root, bar,
                          store, 'detector-calibration')
  t = threshold_at_fpr(cal_scores, f['fpr'])
  clean_ok, clean_s, _ = _run(clean_fn, params, batch_stats, images, labels, bs, mesh, root, bar,
                              store, 'detector-clean')
  clean_rejected = clean_s > np.float32(t)
  accepted_ok = clean_ok & ~clean_rejected
  results = {'num_examples': n, 'clean_accuracy': float(accepted_ok.mean()), 'attacks': {}}
  det = {'detector': config.defense.name, 'squeezers': [name for name, _ in squeeze],
         'threshold': t, 'fpr': f['fpr'], 'calibration': 'last training images (held out)',
         'calibration_examples': len(cal_y),
         'calibration_fpr': float((cal_scores > np.float32(t)).mean()),
         'test_fpr': float(clean_rejected.mean()),
         'classifier_clean_accuracy': float(clean_ok.mean()), 'attacks': {}}
  classifier_ok, defended, violations = {}, {}, 0
  for a_i, (name, cfg) in enumerate(named):
    bar.set_description(f'eval {name}')
    t0 = time.perf_counter()
    # The same key as evaluate.evaluate's: a naive attack returns the same points there.
    ok, s, out = _run(make_eval_fn(model, cfg, bn, mesh, fns, t), params, batch_stats, images,
                      labels, bs, mesh, jax.random.fold_in(root, rng.EVAL_ATTACKS + a_i), bar,
                      store, f'detector-attack-{name}')
    classifier_ok[name], violations = ok, violations + int(out.sum())
    defended[name], det['attacks'][name] = abstention(clean_ok, clean_rejected, ok,
                                                      s > np.float32(t))
    det['attacks'][name]['detector_aware'] = specs[name]['detector_penalty'] > 0
    results['attacks'][name] = {
        'accuracy': float(defended[name].mean()), 'correct': int(defended[name].sum()),
        'metric': metric(cfg), 'seconds': time.perf_counter() - t0, **specs[name]}
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


def _classifier_checks(model, params, batch_stats, images, labels, config, named, specs,
                       classifier_ok, ball, root):
  """The gradient-masking checks of robust_jax.sanity on the classifier alone (naive attacks)."""
  m = min(config.eval.sanity_examples, len(labels))
  x, y = images[:m].astype(np.float32) / 255.0, labels[:m]
  fn = model_fns.logits_fn(model, params, batch_stats, evaluate_lib.BN_MODE)
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
