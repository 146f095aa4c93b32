"""The sanity checks pass on an honest model and flag models built to mask gradients."""

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.eval import sanity

_W = jax.random.normal(jax.random.key(1), (64, 5)) * 0.5


def honest(x):
  return x.reshape(x.shape[0], -1) @ _W


def _data():
  x = np.asarray(jax.random.uniform(jax.random.key(2), (40, 8, 8, 1)))
  return x, np.asarray(jnp.argmax(honest(x), -1))


def _verdicts(logits_fn, x, y, **kw):
  primary_cfg = dict(name='pgd', norm='linf', eps=0.05, steps=10, step_size=0.0125)
  primary = sanity.accuracy_under(primary_cfg, logits_fn, x, y, jax.random.key(0), 40)
  checks, _ = sanity.run_checks(logits_fn, x, y, norm='linf', eps=0.05, key=jax.random.key(1),
                                primary=(primary_cfg, primary), batch_size=40, **kw)
  return {c['name']: c['verdict'] for c in checks}


def test_an_honest_model_passes():
  x, y = _data()
  verdicts = _verdicts(honest, x, y)
  assert 'FAIL' not in verdicts.values(), verdicts


def test_softmax_outputs_with_temperature_are_flagged():
  x, y = _data()
  masked = lambda v: jax.nn.softmax(honest(v) * 100.0)   # probabilities, saturated
  verdicts = _verdicts(masked, x, y)
  assert verdicts['outputs are logits'] == 'FAIL'


def test_a_quantisation_layer_is_flagged():
  x, y = _data()
  masked = lambda v: honest(jnp.round(v * 8) / 8)         # zero gradient almost everywhere
  verdicts = _verdicts(masked, x, y)
  assert verdicts['input gradients finite and non-zero'] == 'FAIL'
  assert verdicts['unbounded attack succeeds'] == 'FAIL'


def test_single_checks_on_hand_made_figures():
  yes, no = np.array([True, True]), np.array([False, True])
  assert sanity.check_iterative_beats_single_step(no, yes)['verdict'] == 'FAIL'
  assert sanity.check_iterative_beats_single_step(yes, no)['verdict'] == 'PASS'
  assert sanity.check_black_box(yes, no)['verdict'] == 'FAIL'
  assert sanity.check_eps_curve([0.9, 0.5, 0.6, 0.0], [0, 1, 2, 3])['verdict'] == 'FAIL'
  assert sanity.check_eps_curve([0.9, 0.5, 0.1, 0.0], [0, 1, 2, 3])['verdict'] == 'PASS'
  assert sanity.check_in_ball(1, 10)['verdict'] == 'FAIL'
  assert sanity.check_deterministic(np.zeros(3), np.ones(3), 1)['verdict'] == 'FAIL'


def test_check_logits_is_stable_on_large_logits():
  big = np.array([[1000.0, 0.0, -5.0], [0.0, 2000.0, 3.0]])
  with np.errstate(over='raise', invalid='raise'):  # np.exp(1000) would overflow
    assert sanity.check_logits(big)['verdict'] == 'PASS'
    logp = np.asarray(jax.nn.log_softmax(jnp.asarray(big) * 10))  # log-probabilities, huge range
    assert sanity.check_logits(logp)['verdict'] == 'WARN'


def test_checks_that_cannot_run_are_listed_as_skipped_with_the_reason():
  x, y = _data()
  checks, _ = sanity.run_checks(honest, x, y, norm='linf', eps=0.05, key=jax.random.key(1),
                                batch_size=40)
  by_name = {c['name']: c for c in checks}
  for name in ('noise no better than gradients', 'attack converged', 'iterative >= single-step',
               'black-box does not beat white-box'):
    assert by_name[name]['verdict'] == 'SKIPPED', name
    assert by_name[name]['detail']  # the reason


def test_without_a_named_single_step_attack_fgsm_runs_for_the_check():
  x, y = _data()
  cfg = dict(name='pgd', norm='linf', eps=0.05, steps=10, step_size=0.0125)
  # An 'iterative' result that breaks nothing: FGSM breaks some points, so the check FAILs.
  checks, _ = sanity.run_checks(honest, x, y, norm='linf', eps=0.05, key=jax.random.key(1),
                                primary=(cfg, np.ones(len(y), bool)), batch_size=40)
  by_name = {c['name']: c for c in checks}
  assert by_name['iterative >= single-step']['verdict'] == 'FAIL'
  assert 'fgsm' in by_name['iterative >= single-step']['detail']
  assert 'pgd10' in by_name['attack converged']['detail']


def test_black_box_figure_is_labelled_with_the_examples_it_counts():
  white, square = np.ones(300, bool), np.ones(300, bool)
  square[:3] = False
  c = sanity.check_black_box(white, square)
  assert c['examples'] == 300 and c['figure'] == 1.0 and '300' in c['detail']
