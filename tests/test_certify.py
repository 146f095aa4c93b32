"""Randomised smoothing: confidence bounds, PREDICT and CERTIFY on classifiers with known answers,
the evaluation wiring, config validation and the report."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from robust_jax import errors
from robust_jax import experiment
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import report
from robust_jax import validation
from robust_jax.eval import certify
from robust_jax.eval import robust
from tests import helpers

# A linear two-class classifier on 4x4 images: class 1 iff <w, x> > 1, with |w| = 1. Under
# N(0, sigma^2 I) noise, P(class 1) = Phi((<w, x> - 1) / sigma), so the smoothed classifier's
# exact robust radius is |<w, x> - 1|, the distance to the decision boundary.
_W = jnp.ones((4, 4, 1)) / 4.0


def _linear(x):
  s = jnp.sum(x * _W, axis=(1, 2, 3)) - 1.0
  return jnp.stack([-s, s], -1)


def _constant_images(values):
  return jnp.stack([jnp.full((4, 4, 1), v, jnp.float32) for v in values])


def test_clopper_pearson_bound_matches_closed_forms_and_scipy():
  alpha = 0.001
  # All successes: the alpha quantile of Beta(n, 1) is alpha^(1/n).
  np.testing.assert_allclose(certify.lower_confidence_bound(100, 100, alpha), alpha ** 0.01,
                             rtol=1e-10)
  assert certify.lower_confidence_bound(0, 100, alpha) == 0.0
  for count, n in ((7, 10), (9_000, 10_000), (51, 100)):
    # The one-sided (1 - alpha) bound is the lower end of the two-sided exact (1 - 2 alpha) one.
    ci = scipy.stats.binomtest(count, n).proportion_ci(1 - 2 * alpha, method='exact')
    np.testing.assert_allclose(certify.lower_confidence_bound(count, n, alpha), ci.low,
                               rtol=1e-9)
    assert certify.lower_confidence_bound(count, n, alpha) < count / n


def test_binomial_p_value_matches_scipy_binomtest():
  for n_a, n_b in ((60, 40), (50, 50), (9, 1), (1000, 940), (3, 0)):
    np.testing.assert_allclose(certify.binomial_p_value(n_a, n_b),
                               scipy.stats.binomtest(n_a, n_a + n_b, 0.5).pvalue, rtol=1e-9)


def test_counts_are_per_example_and_independent_of_noise_batch():
  x = _constant_images([0.1, 0.25, 0.4])
  keys = jax.random.split(jax.random.key(0), 3)
  a = certify.sample_counts(_linear, x, keys, sigma=0.5, num=250, noise_batch=64)
  b = certify.sample_counts(_linear, x, keys, sigma=0.5, num=250, noise_batch=250)
  c = certify.sample_counts(_linear, x[1:], keys[1:], sigma=0.5, num=250, noise_batch=100)
  np.testing.assert_array_equal(a, b)  # draw j of example i does not depend on the chunking
  np.testing.assert_array_equal(a[1:], c)  # nor on the other examples
  np.testing.assert_array_equal(np.asarray(a).sum(1), [250] * 3)  # the last chunk is masked
  assert a[0, 0] > a[0, 1] and a[2, 1] > a[2, 0]


def test_certify_radius_on_a_linear_classifier_and_abstention_at_the_boundary():
  values = [0.15, 0.25, 0.3, 0.45]  # <w, x> - 1 = -0.4, 0 (on the boundary), 0.2, 0.8
  margins = np.array([4 * v - 1 for v in values])
  keys = jax.random.split(jax.random.key(1), len(values))
  y = np.array([0, 1, 1, 0])  # the last label is wrong: certified, but not correct
  cert = certify.certify(_linear, _constant_images(values), y, keys, sigma=0.5, n0=100,
                         n=20_000, alpha=0.001, noise_batch=5_000)
  pred, radius = cert.prediction, cert.radius
  np.testing.assert_array_equal(pred, [0, -1, 1, 1])
  np.testing.assert_array_equal(cert.correct, [True, False, True, False])
  assert (cert.p_a[[0, 2, 3]] > 0.5).all() and cert.p_a[1] < 0.5
  assert radius[1] == 0.0
  far = [0, 2, 3]
  # A lower confidence bound: below the exact radius, within the Monte Carlo slack of n = 20,000.
  assert (radius[far] <= np.abs(margins[far])).all()
  np.testing.assert_allclose(radius[far], np.abs(margins[far]), atol=0.06)


def test_certify_from_counts_and_predict_from_counts_by_hand():
  counts0 = np.array([[90, 10], [10, 90], [50, 50]])
  counts = np.array([[1000, 0], [400, 600], [500, 500]])
  pred, radius, p_a = certify.certify_from_counts(counts0, counts, sigma=0.25, alpha=0.001)
  np.testing.assert_allclose(p_a[0], 0.001 ** (1 / 1000))
  np.testing.assert_allclose(radius[0], 0.25 * scipy.stats.norm.ppf(0.001 ** (1 / 1000)))
  np.testing.assert_array_equal(pred, [0, 1, -1])  # the tie abstains: pA < 1/2
  smoothed = certify.predict_from_counts(counts, alpha=0.001)
  np.testing.assert_array_equal(smoothed, [0, 1, -1])  # 600 vs 400: p = 3e-10 < alpha
  assert certify.predict_from_counts(np.array([[52, 48]]), alpha=0.001)[0] == -1


def test_predict_abstains_at_the_boundary_and_is_right_elsewhere():
  keys = jax.random.split(jax.random.key(2), 3)
  pred = certify.predict(_linear, _constant_images([0.1, 0.25, 0.4]), keys, sigma=0.25, n=2000,
                         alpha=0.001, noise_batch=1000)
  np.testing.assert_array_equal(pred, [0, -1, 1])


def test_certified_accuracy_curve():
  radius = np.array([0.0, 0.3, 0.6, 1.2, 0.9])
  correct = np.array([True, True, False, True, True])
  assert certify.certified_accuracy(radius, correct, [0.0, 0.5, 1.0, 2.0]) == [0.8, 0.4, 0.2,
                                                                                 0.0]


def _gaussian_config(**certify_fields):
  c = helpers.quick_config(**{'defense.name': 'gaussian_noise', 'defense.sigma': 0.5})
  c.eval.attacks = {'naive': dict(name='pgd', eps=0.1, steps=1, step_size=0.1)}
  for k, v in certify_fields.items():
    c.eval.certify[k] = v
  return c


@pytest.mark.parametrize('fields,message', [
    (dict(examples=8, n=0), 'eval.certify.n=0'),
    (dict(examples=8, alpha=0.7), 'eval.certify.alpha=0.7'),
    (dict(examples=8, batch_size=6), 'eval.certify.batch_size=6 is not divisible'),
    (dict(examples=8, radii=(0.5, -1.0)), 'eval.certify.radii'),
    (dict(examples=-1), 'eval.certify.examples=-1')])
def test_bad_certify_fields_are_config_errors(fields, message):
  with pytest.raises(errors.ConfigError, match=message):
    validation.validate(_gaussian_config(**fields), 4)


def test_certify_needs_the_gaussian_noise_defense():
  c = helpers.quick_config()
  c.eval.certify.examples = 8
  with pytest.raises(errors.ConfigError, match="needs defense.name='gaussian_noise'"):
    validation.validate(c, 4)
  c.eval.certify.examples = 0
  validation.validate(c, 4)  # off: nothing to check


def test_evaluation_certifies_and_the_report_shows_the_curve(tmp_path):
  c = _gaussian_config(examples=8, n0=16, n=64, batch_size=4, noise_batch=32,
                       radii=(0.0, 0.25, 0.5))
  validation.validate(c, 4)
  dataset = helpers.tiny_dataset(n_test=8, shape=(12, 12, 1))
  model = experiment.deployed_model(c, 10, (0.5,), (0.25,))
  params = model_fns.init_variables(model, jax.random.key(0), (12, 12, 1))['params']
  mesh = parallel.make_mesh()
  results, _ = robust.evaluate(model, params, {}, dataset, c, mesh, progress=False)
  res = results['certify']
  assert (res['sigma'], res['n0'], res['n'], res['num_examples']) == (0.5, 16, 64, 8)
  assert len(res['radius']) == len(res['prediction']) == 8
  pred, radius = np.array(res['prediction']), np.array(res['radius'])
  assert (radius[pred == -1] == 0).all() and (radius >= 0).all() and set(pred) <= set(range(-1, 10))
  correct = pred == np.array(res['label'])
  assert res['correct'] == correct.tolist()
  assert res['certified_accuracy'] == certify.certified_accuracy(radius, correct, [0, 0.25, 0.5])
  assert res['accuracy'] == res['certified_accuracy'][0]
  # The same certificate on one device and in other batches: keyed per example, not per batch.
  c1 = _gaussian_config(examples=8, n0=16, n=64, batch_size=8, noise_batch=64)
  one = certify.run(model, params, {}, dataset, c1, parallel.make_mesh(jax.devices()[:1]),
                    progress=False)
  assert one['prediction'] == res['prediction'] and one['radius'] == res['radius']
  text = report.full_report(results, 'gaussian')
  assert '| L2 radius | certified accuracy (%) |' in text and 'sigma = 0.5' in text
  images = report.write_plots(results, {}, str(tmp_path))
  assert images['certified accuracy against L2 radius'] == 'certified_accuracy.png'
  assert os.path.getsize(tmp_path / 'certified_accuracy.png') > 0


def test_a_killed_certification_resumes_from_its_saved_batches(tmp_path, monkeypatch):
  c = _gaussian_config(examples=8, n0=16, n=64, batch_size=4, noise_batch=32)
  dataset = helpers.tiny_dataset(n_test=8, shape=(8, 8, 1))
  model = experiment.deployed_model(c, 10, (0.5,), (0.25,))
  params = model_fns.init_variables(model, jax.random.key(0), (8, 8, 1))['params']
  mesh = parallel.make_mesh()
  full, _ = robust.evaluate(model, params, {}, dataset, c, mesh, progress=False)

  calls = {'n': 0, 'die_at': 2}
  real_make = certify._make_count_fn

  def counting_make(*args):
    fn = real_make(*args)

    def counting(*a):  # one call per certification batch; the `die_at`th "kills" the process
      calls['n'] += 1
      if calls['n'] == calls['die_at']:
        raise KeyboardInterrupt('killed')
      return fn(*a)

    return counting

  monkeypatch.setattr(certify, '_make_count_fn', counting_make)

  def evaluate(config, die_at=0):
    calls['n'], calls['die_at'] = 0, die_at
    res, _ = robust.evaluate(model, params, {}, dataset, config, mesh, progress=False,
                             progress_dir=str(tmp_path))
    return res['certify'], calls['n']

  with pytest.raises(KeyboardInterrupt):
    evaluate(c, die_at=2)  # the first of the 2 batches is certified and saved
  assert (tmp_path / 'certify.npz').exists()
  resumed, batches = evaluate(c)
  assert batches == 1  # only the batch the kill interrupted is counted again
  again, batches = evaluate(c)
  assert batches == 0  # everything read back
  for res in (resumed, again):
    assert {k: v for k, v in res.items() if k != 'seconds'} == {
        k: v for k, v in full['certify'].items() if k != 'seconds'}

  # Other certify settings (more votes, another sigma): the saved counts are not used.
  saved = (tmp_path / 'certify.npz').read_bytes()
  more_votes = _gaussian_config(examples=8, n0=16, n=96, batch_size=4, noise_batch=32)
  other_sigma = _gaussian_config(examples=8, n0=16, n=64, batch_size=4, noise_batch=32)
  other_sigma.defense.sigma = 0.25
  for changed in (more_votes, other_sigma):
    (tmp_path / 'certify.npz').write_bytes(saved)
    res, batches = evaluate(changed)
    assert batches == 2
    assert (res['n'], res['sigma']) == (changed.eval.certify.n, changed.defense.sigma)
