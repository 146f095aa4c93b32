"""Automatic checks that catch gradient masking and broken evaluations (Athalye et al. 2018;
Carlini et al. 2019, "On evaluating adversarial robustness").

    checks = sanity.run_checks(logits_fn, x, y, norm='linf', eps=0.1, key=key, reference=...)

Each check returns {'name', 'verdict': PASS | WARN | FAIL | SKIPPED, 'figure', 'detail',
'examples'}: `examples` is how many test examples its figure is computed over. Most run on a
subset of the test set (`x: f32[N,H,W,C]` in [0,1], `y: int[N]`), single device; the black-box
and in-ball checks use the whole evaluation. A check that cannot run is listed as SKIPPED with the
reason, never dropped.
"""

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks
from robust_jax.attacks import objectives
from robust_jax.eval import loop

PASS, WARN, FAIL, SKIPPED = 'PASS', 'WARN', 'FAIL', 'SKIPPED'
EPS_MULTIPLES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def _check(name, verdict, figure, detail, examples=None):
  out = {'name': name, 'verdict': verdict, 'figure': figure, 'detail': detail}
  if examples is not None:
    out['examples'] = int(examples)
  return out


def skipped(name, reason):
  """A check that could not run, with the reason (and what would make it run)."""
  return _check(name, SKIPPED, float('nan'), reason, 0)


def accuracy_under(attack_cfg, logits_fn, x, y, key, batch_size, load_model=None):
  """Per-example correctness (bool[N]) under an attack, in batches (the evaluation loop, on
  this process's default device).

  Example i's attack key is `jax.random.split(key, N)[i]`; the last batch is padded with zero
  images and labels and keys of their own. `load_model`: for an attack on another trained run
  (attacks.build).
  """
  batch_size = min(batch_size, len(y))
  attack = jax.jit(lambda xb, yb, kb: jnp.argmax(logits_fn(
      attacks.build(attack_cfg, load_model=load_model)(logits_fn, xb, yb, kb)), -1) == yb)
  n, keys = len(y), jax.random.split(key, len(y))
  pad = -n % batch_size
  if pad:
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    y = np.concatenate([y, np.zeros((pad,), y.dtype)])
    keys = jnp.concatenate([keys, jax.random.split(key, pad)])
  out = loop.run(lambda b: (attack(b['x'], b['y'], b['k']),), {'x': x, 'y': y, 'k': keys},
                 np.arange(n), batch_size, {'correct': np.bool_}, pad_rows=np.arange(n, n + pad))
  return out['correct']


def check_logits(logits):
  """Outputs must be logits: rows of probabilities saturate and flatten the CE gradient."""
  logits = np.asarray(logits, np.float64)
  sums = logits.sum(-1)
  if logits.min() >= 0 and logits.max() <= 1 and np.abs(sums - 1).max() < 1e-3:
    return _check('outputs are logits', FAIL, float(np.abs(sums - 1).max()),
                  'rows are in [0,1] and sum to 1: the model outputs probabilities; attack its '
                  'logits instead (drop the final softmax)')
  top = logits.max(-1)  # stable log-sum-exp: exp never sees a positive argument
  lse = top + np.log(np.exp(logits - top[:, None]).sum(-1))
  if logits.max() <= 0 and np.abs(lse).max() < 1e-3:
    return _check('outputs are logits', WARN, float(np.abs(lse).max()),
                  'rows are log-probabilities (logsumexp = 0); fine for CE, check margin losses')
  return _check('outputs are logits', PASS, float(np.abs(sums - 1).max()),
                'max abs(row sum - 1) of the outputs (probabilities would give 0)')


def check_transform_attacked(transform_name, differentiable, random, bpda_used, eot_used):
  """An input-transformation model must meet BPDA (non-differentiable) and EOT (random)."""
  missing = []
  if not differentiable and not bpda_used:
    missing.append('BPDA (an attack with bpda=True)')
  if random and not eot_used:
    missing.append('EOT (an attack with eot_samples > 1)')
  if missing:
    return _check('adaptive attack on the transform', FAIL, 0.0,
                  f'the model applies the {transform_name} transform but no attack uses '
                  + ' or '.join(missing) + ': naive gradients understate what it lets through')
  return _check('adaptive attack on the transform', PASS, 1.0,
                f'the {transform_name} transform is attacked with'
                + (' BPDA' if not differentiable else '') + (' EOT' if random else '')
                + (' its own gradient' if differentiable and not random else ''))


def check_deterministic(logits_a, logits_b, eot_samples):
  diff = float(np.abs(np.asarray(logits_a) - np.asarray(logits_b)).max())
  if diff == 0:
    return _check('deterministic model', PASS, diff, 'two calls on the same batch agree exactly')
  verdict = WARN if eot_samples > 1 else FAIL
  return _check('deterministic model', verdict, diff,
                f'the model is random (max logit change {diff:.3g}); attacks use EOT with '
                f'{eot_samples} samples' + ('' if eot_samples > 1 else ': set eot_samples > 1'))


def check_gradients(logits_fn, x, y):
  """No zero, NaN or inf input gradients of the cross-entropy."""
  def loss(xa):
    logits = logits_fn(xa)
    return jnp.sum(objectives.cross_entropy(logits, jax.nn.one_hot(y, logits.shape[-1])))
  g = np.asarray(jax.jit(jax.grad(loss))(x)).reshape(len(y), -1)
  nonfinite = float(np.mean(~np.isfinite(g).all(1)))
  zero = float(np.mean((np.abs(g) == 0).all(1)))
  if nonfinite > 0:
    return _check('input gradients finite and non-zero', FAIL, nonfinite,
                  'fraction of examples with NaN/inf input gradients')
  if zero > 0.01:
    return _check('input gradients finite and non-zero', FAIL, zero,
                  'fraction of examples whose input gradient is exactly zero (masked gradients: '
                  'use BPDA for non-differentiable layers)')
  return _check('input gradients finite and non-zero', WARN if zero > 0 else PASS, zero,
                'fraction of examples with an all-zero input gradient')


def check_iterative_beats_single_step(single_correct, iterative_correct, single_name='FGSM',
                                      iterative_name='the iterative attack'):
  """Per example: an iterative attack never fails where a single step succeeded."""
  worse = float(np.mean(iterative_correct & ~single_correct))
  verdict = PASS if worse == 0 else (WARN if worse <= 0.005 else FAIL)
  return _check('iterative >= single-step', verdict, worse,
                f'fraction of examples broken by {single_name} but not by {iterative_name}',
                len(single_correct))


def check_black_box(white_box_correct, black_box_correct):
  """Black-box Square must not beat the white-box attacks by more than 0.2 points."""
  gain = 100 * float(np.mean(white_box_correct & ~black_box_correct))
  return _check('black-box does not beat white-box', PASS if gain <= 0.2 else FAIL, gain,
                f'points (%) of all {len(white_box_correct)} evaluated examples broken by Square '
                'that every white-box attack before it missed', len(white_box_correct))


def check_eps_curve(accuracies, multiples):
  """Accuracy must not rise with eps and must reach ~0 at the largest eps."""
  acc = np.asarray(accuracies)
  rise = float(np.max(np.diff(acc))) if len(acc) > 1 else 0.0
  if rise > 0.01:
    return _check('accuracy falls with eps', FAIL, 100 * rise,
                  f'accuracy rises by {100 * rise:.1f} points between eps multiples; '
                  f'curve {np.round(100 * acc, 1).tolist()} at {list(multiples)} x eps')
  if acc[-1] > 0.02:
    return _check('accuracy falls with eps', FAIL, 100 * float(acc[-1]),
                  f'still {100 * acc[-1]:.1f}% accurate at {multiples[-1]} x eps')
  return _check('accuracy falls with eps', PASS, 100 * float(acc[-1]),
                f'accuracy (%) at {multiples[-1]} x eps; curve '
                f'{np.round(100 * acc, 1).tolist()}')


def check_unbounded(unbounded_accuracy):
  verdict = PASS if unbounded_accuracy == 0 else FAIL
  return _check('unbounded attack succeeds', verdict, 100 * unbounded_accuracy,
                'accuracy (%) under PGD with the whole [0,1] box as budget (must be 0)')


def check_noise(noise_correct, attack_correct, attack_name='the gradient attack'):
  gap = 100 * float(np.mean(attack_correct) - np.mean(noise_correct))
  return _check('noise no better than gradients', PASS if gap <= 0 else FAIL, gap,
                f'accuracy under {attack_name} minus under random noise in the ball (points)',
                len(attack_correct))


def check_convergence(base_correct, doubled_correct, attack_name='the primary attack',
                      doubled_name='doubled'):
  drop = 100 * float(np.mean(base_correct) - np.mean(doubled_correct))
  return _check('attack converged', PASS if drop <= 0.5 else WARN, drop,
                f'accuracy drop (points) from {attack_name} to {doubled_name} (its steps and '
                'restarts doubled)', len(base_correct))


def check_in_ball(violations, total):
  return _check('x_adv inside ball and [0,1]', PASS if violations == 0 else FAIL, violations,
                f'returned points outside their eps-ball or [0,1], of {total}; accuracies are '
                'recomputed on the returned points', total)


def _describe(cfg):
  return attacks.describe(dict(cfg))


def run_checks(logits_fn, x, y, *, norm, eps, key, primary=None, single_step=None,
               square=None, violations=0, checked_points=0, random_logits_fn=None,
               eot_samples=1, batch_size=250, primary_logits_fn=None, clean_correct=None,
               load_model=None):
  """Runs every check on the subset (x, y).

  Args:
    logits_fn: the model as attacks see it, f32[N,H,W,C] -> f32[N,K].
    x, y: the subset, numpy.
    norm, eps: the threat model of the evaluation.
    key: PRNG key for the extra attacks.
    primary: (attack config, bool[N] correct on this subset) of the strongest iterative attack,
      wherever it ran (eval.attacks or the suite's first attack).
    single_step: (name, bool[N] correct on this subset) of a single-step attack that ran; None
      runs FGSM (no random start, step eps) here.
    square: (white-box bool[M], Square bool[M]) over all M evaluated examples, if Square ran.
    violations, checked_points: in-ball violations counted over the whole evaluation.
    random_logits_fn: `(x, key) -> logits` when the model is random (for the determinism check).
    eot_samples: EOT samples the attacks use.
    primary_logits_fn: the model as the primary attack sees it (its BPDA or EOT view), for the
      checks that re-run it; default `logits_fn`.
    clean_correct: bool[N] clean correctness on this subset; every per-example result compared
      below is ANDed with it (robust means correct on the clean input and under the attack).
    load_model: `workdir -> run_io.Run`, for a primary attack on another trained run (a
      transfer attack's surrogate); the evaluation passes robust_jax.run_io.load_model.
  Returns:
    (list of check dicts, {'eps': [...], 'accuracy': [...]}) the accuracy-against-eps curve.
  """
  keys = jax.random.split(key, 8)
  n = len(y)
  batch_size = min(batch_size, n)
  clean = np.ones(n, bool) if clean_correct is None else np.asarray(clean_correct, bool)
  checks = _model_checks(logits_fn, random_logits_fn, x, y, keys, batch_size, eot_samples)
  budget, curve = _budget_checks(logits_fn, x, y, norm, eps, keys, batch_size)
  checks += budget
  names = ('noise no better than gradients', 'attack converged', 'iterative >= single-step')
  if primary is None:
    checks += [skipped(k, 'no iterative attack ran (eval.attacks or eval.suite)') for k in names]
  else:
    checks += _primary_checks(primary, single_step, clean, primary_logits_fn or logits_fn, x, y,
                              norm, eps, keys, batch_size, load_model)
  if square is None:
    checks.append(skipped('black-box does not beat white-box',
                          'Square did not run (eval.suite=standard runs it last)'))
  else:
    checks.append(check_black_box(*square))
  checks.append(check_in_ball(violations, checked_points))
  return checks, curve


def _model_checks(logits_fn, random_logits_fn, x, y, keys, batch_size, eot_samples):
  """Finite logits, determinism and non-zero gradients, on the first batch."""
  head = jnp.asarray(x[:batch_size])
  checks = [check_logits(jax.jit(logits_fn)(head))]
  if random_logits_fn is None:
    a = b = jax.jit(logits_fn)(head)
  else:
    a, b = (jax.jit(random_logits_fn)(head, k) for k in keys[:2])
  checks.append(check_deterministic(a, b, eot_samples))
  checks.append(check_gradients(logits_fn, head, jnp.asarray(y[:batch_size])))
  for c in checks:
    c['examples'] = len(head)
  return checks


def _budget_checks(logits_fn, x, y, norm, eps, keys, batch_size):
  """PGD-20 accuracy falls with eps, and an unbounded PGD succeeds; returns (checks, curve)."""
  n = len(y)
  big = 1.0 if norm == 'linf' else float(np.sqrt(np.prod(x.shape[1:])))
  pgd = dict(name='pgd', norm=norm, steps=20, restarts=1, loss='ce')
  multiples = EPS_MULTIPLES + ((big / eps,) if eps > 0 else ())
  curve = []
  for m in multiples:
    e = min(m * eps, big)
    cfg = dict(pgd, eps=e, step_size=max(2.5 * e / 20, 1e-6))
    curve.append(float(np.mean(accuracy_under(cfg, logits_fn, x, y, keys[2], batch_size))))
  checks = [dict(check_eps_curve(curve, [round(m, 3) for m in multiples]), examples=n)]
  unbounded = dict(pgd, eps=big, steps=100, step_size=big / 20, loss='margin')
  checks.append(dict(check_unbounded(float(np.mean(
      accuracy_under(unbounded, logits_fn, x, y, keys[3], batch_size)))), examples=n))
  return checks, {'eps': [min(m * eps, big) for m in multiples], 'accuracy': curve}


def _primary_checks(primary, single_step, clean, view, x, y, norm, eps, keys, batch_size,
                    load_model):
  """Noise, convergence and single-step checks of the primary attack, re-run on `view`."""
  cfg, correct = primary
  correct = np.asarray(correct, bool) & clean
  name = _describe(cfg)
  noise = dict(name='pgd', norm=norm, eps=eps, steps=1, step_size=1e-9, restarts=1,
               random_start=True)
  checks = [check_noise(accuracy_under(noise, view, x, y, keys[4], batch_size) & clean,
                        correct, name)]
  doubled = dict(cfg)
  doubled['steps'] = 2 * doubled.get('steps', 1)
  doubled['restarts'] = 2 * doubled.get('restarts', 1)
  checks.append(check_convergence(
      correct, accuracy_under(doubled, view, x, y, keys[5], batch_size, load_model) & clean,
      name, _describe(doubled)))
  if single_step is None:
    fgsm = dict(name='fgsm', norm=norm, eps=eps, steps=1, step_size=eps, restarts=1,
                random_start=False)
    single_step = (_describe(fgsm), accuracy_under(fgsm, view, x, y, keys[6], batch_size))
  checks.append(check_iterative_beats_single_step(
      np.asarray(single_step[1], bool) & clean, correct, single_step[0], name))
  return checks


# --- The report's sections on these checks ---


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


def render(results, title=None):
  """[the checks' table, what FAILED, what was SKIPPED] when the checks ran, else []."""
  del title
  if 'sanity_checks' not in results:
    return []
  parts = [sanity_table(results)]
  failed = [c['name'] for c in results['sanity_checks'] if c['verdict'] == FAIL]
  if failed:
    parts.append('**Sanity checks FAILED: ' + ', '.join(failed) + '. Do not trust the robust '
                 'accuracy above: the attacks may be fooled (gradient masking).**')
  skipped_ = [c['name'] for c in results['sanity_checks'] if c['verdict'] == SKIPPED]
  if skipped_:
    parts.append('Sanity checks SKIPPED (could not run; reasons in the table): '
                 + ', '.join(skipped_) + '.')
  return parts


def plots(results, artifacts, workdir):
  """Writes eps_curve.png (accuracy against eps) when the checks drew it; returns {title: file}."""
  del artifacts
  curve = results.get('eps_curve')
  if not curve:
    return {}
  import os  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(curve['eps'], [100 * a for a in curve['accuracy']], 'o-')
  ax.set_xlabel('eps'), ax.set_ylabel('robust accuracy (%)'), ax.set_ylim(-2, 102)
  ax.set_title('PGD-20 accuracy against eps'), ax.grid(alpha=0.3)
  fig.tight_layout(), fig.savefig(os.path.join(workdir, 'eps_curve.png'), dpi=120)
  plt.close(fig)
  return {'robust accuracy against eps': 'eps_curve.png'}
