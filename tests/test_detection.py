"""Feature-squeezing detection: the score, the threshold, abstention, the detector-aware attack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from robust_jax import attacks
from robust_jax import defenses
from robust_jax import errors
from robust_jax import experiment
from robust_jax import parallel
from robust_jax import report
from robust_jax import validation
from robust_jax.defenses import squeezing
from robust_jax.defenses import transforms
from robust_jax.eval import detection
from robust_jax.eval import loop
from robust_jax.eval import robust
from robust_jax.eval import sanity
from tests import helpers

SHAPE = (8, 8, 1)
CHECKER = (np.indices(SHAPE[:2]).sum(0) % 2 * 2 - 1).astype(np.float32)[..., None]


class Toy(nn.Module):
  """Reads helpers.tiny_dataset's labels from the mean brightness, plus a high-frequency weakness.

  logit_k = -alpha (mean(x) - c_k)^2 + beta (-1)^k <checkerboard, x>: per pixel, the
  checkerboard's gradient (2 beta = 3.5) beats the brightness one (about 3), so naive PGD adds a
  checkerboard pattern, which fools the classifier; a 2x2 median filter erases it, so the
  detector catches it. Evading the detector takes a uniform shift (the next class's brightness).
  """

  @nn.compact
  def __call__(self, x, train=False):
    alpha = self.param('alpha', lambda key: jnp.float32(1000.0))
    beta = self.param('beta', lambda key: jnp.float32(1.75))
    centres = (jnp.arange(10) * 25 + 9.5) / 255
    brightness = -alpha * (jnp.mean(x, axis=(1, 2, 3))[:, None] - centres) ** 2
    hf = jnp.sum(x * CHECKER, axis=(1, 2, 3))[:, None] * (1.0 - 2.0 * (jnp.arange(10) % 2))
    return brightness + beta * hf


def _setup(fpr=0.1, calibration=40, **attacks):
  c = helpers.quick_config(**{'defense.name': 'feature_squeezing'})
  c.defense.fpr = fpr
  c.defense.squeeze_bits = 5
  c.defense.squeeze_median = 2
  c.defense.calibration_examples = calibration
  c.eval.attacks = attacks
  model = Toy()
  params = model.init(jax.random.key(0), jnp.zeros((1,) + SHAPE))['params']
  dataset = helpers.tiny_dataset(n_train=80, n_test=32, shape=SHAPE)
  return c, model, params, dataset


def test_score_matches_a_hand_computation():
  x = np.random.default_rng(0).uniform(size=(3, 6, 6, 1)).astype(np.float32)
  w = np.random.default_rng(1).normal(size=(36, 4)).astype(np.float32)
  logits_fn = lambda v: jnp.reshape(v, (v.shape[0], -1)) @ w  # noqa: E731
  squeeze = [s for _, s in squeezing.squeezers(1, 2)]
  got = np.asarray(squeezing.score(logits_fn, jnp.asarray(x), squeeze))

  def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  p = softmax(x.reshape(3, -1) @ w)
  bits = np.round(x)  # 1 bit
  # 2x2 median: the window whose lower-right pixel is (i, j), edges reflected.
  padded = np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)), mode='reflect')
  med = np.zeros_like(x)
  for i in range(6):
    for j in range(6):
      med[:, i, j] = np.median(padded[:, i:i + 2, j:j + 2], axis=(1, 2))
  want = np.maximum(np.abs(p - softmax(bits.reshape(3, -1) @ w)).sum(-1),
                    np.abs(p - softmax(med.reshape(3, -1) @ w)).sum(-1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(got >= 0) and np.all(got <= 2)


def test_bit_depth_squeezer_has_the_identity_gradient():
  (_, bits), = squeezing.squeezers(1, 0)
  x = jnp.linspace(0.0, 1.0, 12).reshape(1, 2, 6, 1)
  np.testing.assert_array_equal(bits(x), transforms.bit_depth(x, 1))
  np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(bits(v) * 3.0))(x), 3.0)


@pytest.mark.parametrize('n,fpr', [(200, 0.05), (40, 0.1), (97, 0.3), (10, 0.01)])
def test_threshold_rejects_the_requested_fraction_of_calibration_scores(n, fpr):
  scores = np.random.default_rng(n).uniform(0, 2, n).astype(np.float32)
  t = squeezing.threshold_at_fpr(scores, fpr)
  assert int((scores > np.float32(t)).sum()) == int(np.floor(fpr * n + 1e-9))
  assert t in scores  # the smallest such threshold: one more rejection would need a lower one


def test_abstention_accounting_against_a_hand_computation():
  c, model, params, dataset = _setup(
      zero=dict(name='pgd', eps=0.0, steps=1, step_size=0.01, random_start=False))
  results, _ = detection.evaluate(model, params, {}, dataset, c, parallel.make_mesh(),
                                  progress=False)
  fn = lambda v: model.apply({'params': params}, v)  # noqa: E731
  squeeze = [s for _, s in squeezing.squeezers(5, 2)]
  score = lambda u8: np.asarray(squeezing.score(fn, jnp.asarray(u8 / 255.0, jnp.float32),  # noqa: E731
                                                squeeze))
  cal = score(dataset.train_images[-40:])
  t = np.sort(cal)[-5]  # 40 scores, fpr 0.1: 4 above the threshold
  x = jnp.asarray(dataset.test_images / 255.0, jnp.float32)
  correct = np.asarray(jnp.argmax(fn(x), -1)) == dataset.test_labels
  rejected = score(dataset.test_images) > t
  d = results['detection']
  assert d['threshold'] == pytest.approx(float(t), rel=1e-4) and d['calibration_fpr'] == 0.1
  assert d['test_fpr'] == pytest.approx(rejected.mean())
  assert d['classifier_clean_accuracy'] == pytest.approx(correct.mean())
  assert 0 < rejected.sum() < len(rejected)  # the accounting below is exercised
  # Clean: a rejected input is an error. Attacked at eps 0 (the clean inputs): a rejection defends
  # nothing the clean input did not already have, so the attack's accuracy is the clean one.
  # (Some inputs are rejected, so `correct | rejected` would count more than this.)
  accepted_ok = correct & ~rejected
  assert results['clean_accuracy'] == pytest.approx(accepted_ok.mean())
  assert results['attacks']['zero']['accuracy'] == results['clean_accuracy']
  assert results['attacks']['zero']['correct'] == int(accepted_ok.sum())
  assert d['attacks']['zero']['successful'] == 0 and d['attacks']['zero']['detection_rate'] is None
  assert results['worst_case_correct'] == int(accepted_ok.sum())
  assert 'Detector `feature_squeezing`' in report.full_report(results)


def test_abstention_defends_only_clean_inputs_that_are_right_and_accepted():
  # Per example: clean right?, clean rejected?, attacked right?, attacked rejected?
  clean_correct = np.array([1, 1, 1, 1, 0, 0, 1, 1], bool)
  clean_rejected = np.array([0, 0, 0, 0, 0, 0, 1, 1], bool)
  correct = np.array([1, 0, 0, 0, 0, 1, 1, 0], bool)   # the attack broke 1, 2, 3 and 7
  rejected = np.array([1, 1, 0, 0, 1, 0, 0, 1], bool)
  defended, d = detection.abstention(clean_correct, clean_rejected, correct, rejected)
  # 0: survives; 1: broken but rejected; 2, 3: broken and accepted; 4: clean wrong, its attacked
  # point rejected; 5: clean wrong, attacked right; 6, 7: clean right but rejected clean.
  np.testing.assert_array_equal(defended, [1, 1, 0, 0, 0, 0, 0, 0])
  assert d == {'classifier_accuracy': 3 / 8, 'rejected': 4, 'successful': 4, 'detected': 2,
               'detection_rate': 2 / 4}


def test_a_clean_wrong_example_with_its_attacked_point_rejected_is_not_defended():
  no, yes = np.array([False]), np.array([True])
  for correct in (no, yes):  # whatever the classifier says on the attacked point
    defended, _ = detection.abstention(no, no, correct, yes)
    assert not defended.any()
    defended, _ = detection.abstention(no, yes, correct, yes)  # rejected clean as well
    assert not defended.any()


def test_a_clean_correct_but_rejected_example_is_not_defended():
  no, yes = np.array([False]), np.array([True])
  for correct in (no, yes):
    for rejected in (no, yes):
      defended, _ = detection.abstention(yes, yes, correct, rejected)
      assert not defended.any()
  defended, _ = detection.abstention(yes, no, no, yes)  # accepted clean, attacked point rejected
  assert defended.all()


@pytest.mark.parametrize('seed', range(5))
def test_defended_never_exceeds_clean_and_equals_it_for_the_identity_attack(seed):
  r = np.random.default_rng(seed)
  clean_correct, clean_rejected, correct, rejected = r.random((4, 200)) < 0.5
  accepted_ok = clean_correct & ~clean_rejected
  defended, _ = detection.abstention(clean_correct, clean_rejected, correct, rejected)
  assert not (defended & ~accepted_ok).any()  # per example, so also in accuracy
  assert defended.mean() <= accepted_ok.mean()
  # An attack that returns the clean inputs (eps = 0) changes nothing.
  identity, d = detection.abstention(clean_correct, clean_rejected, clean_correct, clean_rejected)
  np.testing.assert_array_equal(identity, accepted_ok)
  assert d['successful'] == 0


def test_detector_aware_attack_beats_the_naive_one(monkeypatch):
  # The eps curve of the sanity checks at eps only (and the unbounded end): this test reads
  # other checks, and each point of the curve is one more PGD-20 to compile.
  monkeypatch.setattr(sanity, 'EPS_MULTIPLES', (1.0,))
  pgd = dict(name='pgd', eps=0.1, steps=30, step_size=0.01, loss='margin')
  c, model, params, dataset = _setup(naive=pgd, adaptive=dict(pgd, detector_penalty=2.0))
  c.eval.sanity_checks = True
  c.eval.sanity_examples = 8
  mesh = parallel.make_mesh()
  results, _ = detection.evaluate(model, params, {}, dataset, c, mesh, progress=False)
  d, acc = results['detection']['attacks'], results['attacks']
  # The naive attack fools the classifier but is caught; the detector-aware one evades it.
  assert d['naive']['classifier_accuracy'] < 0.2 and d['naive']['detection_rate'] > 0.8
  assert acc['naive']['accuracy'] > 0.7
  assert acc['adaptive']['accuracy'] < acc['naive']['accuracy'] - 0.4
  assert d['adaptive']['detection_rate'] < 0.5
  assert acc['adaptive']['metric'] == 'pgd30_linf_0.1_margin_detaware2'
  assert results['worst_case_accuracy'] <= acc['adaptive']['accuracy']
  # With abstention, no attack's accuracy exceeds the clean one (rejection defends only inputs
  # that were right and accepted clean); here some clean inputs are wrong or rejected.
  assert results['clean_accuracy'] < 1
  for name in ('naive', 'adaptive'):
    assert acc[name]['accuracy'] <= results['clean_accuracy'], name
  assert results['worst_case_accuracy'] <= min(a['accuracy'] for a in acc.values())
  checks = {k['name']: k for k in results['sanity_checks']}
  assert checks['detector-aware beats naive']['verdict'] == 'PASS'
  assert checks['detector-aware attack']['verdict'] == 'PASS'
  assert checks['x_adv inside ball and [0,1]']['verdict'] == 'PASS'
  # A naive attack returns the same points as in robust.evaluate (same keys).
  c.eval.attacks = {'naive': pgd}
  c.eval.sanity_checks = False
  plain, _ = robust.evaluate(model, params, {}, dataset, c, mesh, progress=False)
  assert plain['attacks']['naive']['accuracy'] == d['naive']['classifier_accuracy']


def test_a_killed_detector_evaluation_resumes_from_its_saved_batches(tmp_path, monkeypatch):
  pgd = dict(name='pgd', eps=0.1, steps=3, step_size=0.03, loss='margin')
  c, model, params, dataset = _setup(naive=pgd, adaptive=dict(pgd, detector_penalty=2.0))
  mesh = parallel.make_mesh()
  full, _ = detection.evaluate(model, params, {}, dataset, c, mesh, progress=False)
  calls = {'n': 0, 'die_at': 7}
  real_run = loop.run

  def dying_run(fn, *args, **kwargs):  # the 7th batch call "kills" the process
    def counting(*a):
      calls['n'] += 1
      if calls['n'] == calls['die_at']:
        raise KeyboardInterrupt('killed')
      return fn(*a)
    return real_run(counting, *args, **kwargs)

  monkeypatch.setattr(loop, 'run', dying_run)
  with pytest.raises(KeyboardInterrupt):
    detection.evaluate(model, params, {}, dataset, c, mesh, progress=False,
                       progress_dir=str(tmp_path))
  calls.update(n=0, die_at=-1)
  resumed, _ = detection.evaluate(model, params, {}, dataset, c, mesh, progress=False,
                                  progress_dir=str(tmp_path))
  # calibration 5 + clean 4 + 2 attacks x 4 batches of 8 = 17 calls; 6 were done before the kill
  assert calls['n'] == 17 - 6, calls
  assert resumed['detection'] == full['detection']
  assert resumed['clean_accuracy'] == full['clean_accuracy']
  assert resumed['worst_case_accuracy'] == full['worst_case_accuracy']
  for name in ('naive', 'adaptive'):
    assert resumed['attacks'][name]['correct'] == full['attacks'][name]['correct']


def test_detection_checks_flag_naive_only_and_weaker_adaptive_evaluations():
  pgd = attacks.validate(dict(name='pgd', eps=0.1))
  det = {'fpr': 0.05, 'calibration_examples': 1000, 'test_fpr': 0.2}

  def verdicts(specs, accuracy):
    results = {'attacks': {k: {'accuracy': a} for k, a in accuracy.items()}, 'detection': det}
    return {c['name']: c['verdict'] for c in detection.detection_checks(results, specs, 1000)}

  naive_only = verdicts({'naive': pgd}, {'naive': 0.5})
  assert naive_only['detector-aware attack'] == 'FAIL'
  assert naive_only['calibrated FPR holds on test'] == 'WARN'  # 20% rejected, 5% calibrated
  specs = {'naive': pgd, 'adaptive': dict(pgd, detector_penalty=1.0)}
  assert verdicts(specs, {'naive': 0.5, 'adaptive': 0.6})['detector-aware beats naive'] == 'FAIL'
  assert verdicts(specs, {'naive': 0.5, 'adaptive': 0.1})['detector-aware beats naive'] == 'PASS'


@pytest.mark.parametrize('field,value,message', [
    ('fpr', 0.0, 'defense.fpr'), ('fpr', 1.5, 'defense.fpr'),
    ('squeeze_bits', 9, 'defense.squeeze_bits'), ('squeeze_median', 1, 'squeeze_median'),
    ('calibration_examples', 0, 'defense.calibration_examples')])
def test_bad_fields_raise_config_errors(field, value, message):
  c = helpers.quick_config(**{'defense.name': 'feature_squeezing'})
  c.defense[field] = value
  with pytest.raises(errors.ConfigError, match=message):
    squeezing.fields(c)


def test_suite_and_too_many_calibration_images_are_config_errors():
  c = helpers.quick_config(**{'defense.name': 'feature_squeezing', 'eval.suite': 'quick'})
  with pytest.raises(errors.ConfigError, match='eval.suite'):
    squeezing.fields(c)
  c.eval.suite = ''
  c.defense.calibration_examples = 64
  with pytest.raises(errors.ConfigError, match='calibration_examples=64'):
    defenses.training_data(c, helpers.tiny_dataset(n_train=64))
  c.defense.calibration_examples = 10
  assert len(defenses.training_data(c, helpers.tiny_dataset(n_train=64)).train_labels) == 54


def test_config_validates_and_launching_trains_without_the_calibration_images(tmp_path,
                                                                              monkeypatch):
  from configs.defenses import feature_squeezing  # pylint: disable=g-import-not-at-top
  validation.validate(feature_squeezing.get_config(), 4)
  c = helpers.quick_config(**{'defense.name': 'feature_squeezing', 'eval.num_examples': 8})
  c.defense.calibration_examples = 16
  c.eval.attacks = {'adaptive': dict(name='pgd', eps=0.1, steps=1, step_size=0.1,
                                     detector_penalty=2.0)}
  dataset = helpers.tiny_dataset(n_train=64, n_test=8)
  monkeypatch.setattr(experiment.data_lib, 'load', lambda cfg: dataset)
  trained_on, fit = [], experiment.loop.fit

  def recording_fit(config, workdir, data, *args, **kwargs):
    trained_on.append(len(data.train_labels))
    return fit(config, workdir, data, *args, **kwargs)

  monkeypatch.setattr(experiment.loop, 'fit', recording_fit)
  results = experiment.train_and_evaluate(c, str(tmp_path), progress=False)
  assert trained_on == [48]  # the last 16 training images calibrate the detector
  assert results['detection']['calibration_examples'] == 16
  assert results['attacks']['adaptive']['metric'] == 'pgd1_linf_0.1_ce_detaware2'
