"""robust_jax.evaluate on models that are not robust_jax's: exact counts, the per-example worst
case, invariance to the batch size and the devices, the report, and clear input errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robust_jax
from robust_jax import errors
from robust_jax import model_fns
from robust_jax import models
from robust_jax import parallel
from robust_jax import rng
from robust_jax.eval import api
from robust_jax.eval import robust
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Deterministic, and weaker than the suite: a quarter of the radius in one step.
FGSM = dict(name='fgsm', steps=1, step_size=1 / 255, random_start=False)
QUIET = dict(norm='Linf', eps=4 / 255, sanity_checks=False, verbose=False)


def brightness_data(n=30, hw=8, seed=0, near_edge=0):
  """Images whose label is their mean brightness band (10 bands of 25/255), each shifted by an
  offset in [-15, 15]/255 (most are on the right side of their band's edge); the first
  `near_edge` by 12 to 13/255 either way, within a random draw of the edge."""
  r = np.random.default_rng(seed)
  y = r.integers(0, 10, n).astype(np.int64)
  offset = r.uniform(-15, 15, (n, 1, 1, 1))
  offset[:near_edge] = r.choice([-1, 1], (near_edge, 1, 1, 1)) * r.uniform(12, 13,
                                                                            (near_edge, 1, 1, 1))
  x = y[:, None, None, None] * 25 + 10 + offset + r.uniform(-5, 5, (n, hw, hw, 1))
  return np.clip(x / 255, 0, 1).astype(np.float32), y


def brightness_model(hw=8, key=0):
  """A pure-JAX model (no flax): params pytree and apply(params, x); reads the brightness band."""
  k1, k2 = jax.random.split(jax.random.key(key))
  params = {'centers': (jnp.arange(10) * 25 + 10) / 255, 'scale': jnp.asarray(3000.0),
            'w': 0.01 * jax.random.normal(k1, (hw * hw, 16)),
            'v': 0.01 * jax.random.normal(k2, (16, 10))}

  def apply(p, x):
    flat = x.reshape(x.shape[0], -1)
    m = flat.mean(-1, keepdims=True)
    return -p['scale'] * (m - p['centers']) ** 2 + jnp.tanh(flat @ p['w']) @ p['v']

  return params, apply


def _figures(results):
  """The results without what describes the run (times, devices, machine, versions)."""
  out = {}
  for k, v in results.items():
    if 'seconds' in k or k in ('devices', 'finished_at', 'config', 'per_example'):
      continue
    out[k] = _figures(v) if isinstance(v, dict) else v
  if 'suite' in out:
    out['suite']['attacks'] = [_figures(a) for a in out['suite']['attacks']]
  return out


def test_counts_and_worst_case_match_an_independent_computation():
  x, y = brightness_data()
  params, apply = brightness_model()
  logits_fn = lambda v: apply(params, v)  # noqa: E731  (a closure over the weights)
  both = robust_jax.evaluate(logits_fn, x, y, suite='quick', attacks={'fgsm': FGSM}, **QUIET)
  clean = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1)) == y
  assert 0 < clean.sum() < len(y)
  per = both['per_example']
  np.testing.assert_array_equal(per['clean'], clean)
  assert both['num_examples'] == len(y) and both['clean_correct'] == int(clean.sum())
  assert both['clean_accuracy'] == clean.sum() / len(y)
  assert both['threat_model'] == {'norm': 'linf', 'eps': 4 / 255}
  assert both['attacks']['fgsm']['correct'] == int(per['attack/fgsm'].sum())
  assert both['suite']['correct'] == int(per['suite'].sum())
  for a in [both['attacks']['fgsm']] + both['suite']['attacks']:
    assert (a['norm'], a['eps']) == ('linf', 4 / 255)
  # The worst case is the per-example AND of separate evaluations (the same per-example keys).
  alone = robust_jax.evaluate(logits_fn, x, y, suite=None, attacks={'fgsm': FGSM}, **QUIET)
  suite = robust_jax.evaluate(logits_fn, x, y, suite='quick', **QUIET)
  worst = clean & alone['per_example']['attack/fgsm'] & suite['per_example']['suite']
  assert (alone['per_example']['attack/fgsm'] & ~suite['per_example']['suite']).any()
  np.testing.assert_array_equal(per['worst_case'], worst)
  assert both['worst_case_correct'] == int(worst.sum())
  assert both['worst_case_accuracy'] == worst.sum() / len(y)
  assert 0 < worst.sum() < clean.sum()  # the attacks broke some examples, not all
  for robust_acc in (both['attacks']['fgsm']['accuracy'], both['suite']['accuracy']):
    assert both['worst_case_accuracy'] <= robust_acc <= both['clean_accuracy']


@pytest.mark.multidevice
def test_same_results_for_any_batch_size_and_device_count():
  x, y = brightness_data(n=27, near_edge=9)
  params, apply = brightness_model()
  # A random point of the ball: its outcome near an edge depends on each example's own key.
  noise = dict(name='pgd', steps=1, step_size=1e-6, random_start=True)
  run = lambda **kw: robust_jax.evaluate(  # noqa: E731
      apply, x, y, params=params, suite='quick', attacks={'fgsm': FGSM, 'noise': noise},
      **QUIET, **kw)
  four = run(batch_size=8)                                 # 4 devices, last batch padded
  assert len(jax.devices()) >= 4 and len(four['devices']) >= 4
  broken = four['per_example']['clean'] & ~four['per_example']['attack/noise']
  assert 0 < broken[:9].sum() < four['per_example']['clean'][:9].sum()
  for other in (run(batch_size=12), run(batch_size=5, devices=jax.devices()[:1])):
    assert _figures(other) == _figures(four)
    for k, v in four['per_example'].items():
      np.testing.assert_array_equal(other['per_example'][k], v)
  # The closure and the params= form evaluate the same function (no suite: compiling it again
  # for the closure took seconds; test_counts_and_worst_case_... runs a closure under the suite).
  closed = robust_jax.evaluate(lambda v: apply(params, v), x, y, suite=None,
                               attacks={'fgsm': FGSM}, **QUIET)
  for k in ('clean', 'attack/fgsm'):
    np.testing.assert_array_equal(closed['per_example'][k], four['per_example'][k], err_msg=k)


def test_same_per_example_results_as_the_flax_evaluation():
  """A robust_jax model through robust_jax.evaluate and through robust.evaluate (--mode=eval's
  evaluator): one evaluation, the same result for every example."""
  config = helpers.quick_config()
  config.eval.suite = 'quick'
  dataset = helpers.tiny_dataset(n_test=21)
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  variables = model_fns.init_variables(model, rng.root_key(0, rng.INIT),
                                       dataset.test_images.shape[1:])
  ref, art = robust.evaluate(model, variables['params'], {}, dataset, config, parallel.make_mesh(),
                             progress=False)
  got = robust_jax.evaluate(
      lambda v, x: model.apply(v, x, train=False), dataset.test_images, dataset.test_labels,
      params=variables, norm='linf', eps=config.eval.suite_eps, suite='quick',
      attacks={k: dict(v) for k, v in config.eval.attacks.items()}, batch_size=16,
      sanity_checks=False, verbose=False)
  for k, v in art['per_example'].items():
    np.testing.assert_array_equal(got['per_example'][k], v)
  assert _figures({k: got[k] for k in ref}) == _figures(ref)  # counts included


def test_nnx_module():
  nnx = pytest.importorskip('flax.nnx')

  class Net(nnx.Module):

    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
      self.head = nnx.Linear(4 * 8 * 8, 10, rngs=rngs)

    def __call__(self, x):
      return self.head(nnx.relu(self.conv(x)).reshape(x.shape[0], -1))

  x, y = brightness_data(n=12)
  net = Net(nnx.Rngs(0))
  direct = np.asarray(jnp.argmax(net(jnp.asarray(x)), -1)) == y
  closed = robust_jax.evaluate(lambda v: net(v), x, y, suite=None, attacks={'fgsm': FGSM},
                               **QUIET)
  graphdef, state = nnx.split(net)
  split = robust_jax.evaluate(lambda s, v: nnx.merge(graphdef, s)(v), x, y, params=state,
                              suite=None, attacks={'fgsm': FGSM}, **QUIET)
  for r in (closed, split):
    np.testing.assert_array_equal(r['per_example']['clean'], direct)
    assert r['clean_correct'] == int(direct.sum())
  np.testing.assert_array_equal(closed['per_example']['worst_case'],
                                split['per_example']['worst_case'])


def test_workdir_gets_the_results_and_report_of_mode_eval(tmp_path):
  x, y = brightness_data(n=20)
  params, apply = brightness_model()
  got = robust_jax.evaluate(apply, x, y, params=params, norm='L2', eps=0.1, suite='quick',
                            attacks={'pgd': dict(name='pgd', steps=5)}, num_examples=16,
                            sanity_examples=8, workdir=str(tmp_path), title='brightness',
                            verbose=False)
  with open(tmp_path / 'results.json') as f:
    written = json.load(f)
  assert written == json.loads(json.dumps({k: v for k, v in got.items() if k != 'per_example'}))
  # What --mode=eval's results.json holds (robust.evaluate's keys and the experiment's).
  for key in ('num_examples', 'clean_accuracy', 'attacks', 'suite', 'worst_case_accuracy',
              'worst_case_correct', 'sanity_checks', 'eps_curve', 'eval_seconds', 'test_split',
              'config', 'code_version', 'source_digest', 'machine', 'jax_version', 'devices',
              'finished_at'):
    assert key in written, key
  assert written['num_examples'] == 16 and written['test_split']['of'] == 20
  assert written['threat_model'] == {'norm': 'l2', 'eps': 0.1}
  assert written['config']['eval']['attacks']['pgd']['eps'] == 0.1
  text = (tmp_path / 'report.md').read_text()
  assert text.startswith('### brightness') and '| worst case |' in text
  assert 'Sanity checks' in text and "Suite `quick`" in text
  with np.load(tmp_path / 'per_example.npz') as f:
    np.testing.assert_array_equal(f['worst_case'], got['per_example']['worst_case'])
    assert set(f.files) == {'clean', 'attack_pgd', 'suite', 'worst_case'}


def _good():
  x, y = brightness_data(n=8)
  params, apply = brightness_model()
  return (lambda v: apply(params, v)), x, y


_BAD = [
    (lambda f, x, y: (f, x * 255, y, {}), r'must lie in \[0,1\].*Divide 0..255'),
    (lambda f, x, y: (f, (x * 255).astype(np.int64), y, {}), 'floats in .0,1. .or uint8'),
    (lambda f, x, y: (f, x.transpose(0, 3, 1, 2), y, {}), r'NCHW.*transpose\(0, 2, 3, 1\)'),
    (lambda f, x, y: (f, x[..., 0], y, {}), r'NHWC.*images\[\.\.\., None\]'),
    (lambda f, x, y: (f, x, y[:-1], {}), 'one per image'),
    (lambda f, x, y: (f, x, np.eye(10)[y], {}), 'one-hot'),
    (lambda f, x, y: (f, x, y.astype(np.float32), {}), 'integer class indices'),
    (lambda f, x, y: (f, x, y - 10, {}), '>= 0'),
    (lambda f, x, y: (lambda v: f(v)[:, :5], x, y, {}), r'outside the model\'s 5 classes'),
    (lambda f, x, y: (lambda v: f(v).sum(-1), x, y, {}), r'num_classes\].*got shape \(\d+,\)'),
    (lambda f, x, y: (lambda v: (f(v), {}), x, y, {}), 'one array of logits'),
    (lambda f, x, y: (lambda v: np.asarray(v).mean(), x, y, {}), 'JAX function'),
    (lambda f, x, y: (f, x, y, {'norm': 'L1'}), 'Linf.*L2'),
    (lambda f, x, y: (f, x, y, {'eps': 8}), 'eps=8/255'),
    (lambda f, x, y: (f, x, y, {'suite': 'autoattack'}), 'standard'),
    (lambda f, x, y: (f, x, y, {'num_examples': 9}), r'\[1, 8\]'),
    (lambda f, x, y: (f, x, y, {'attacks': {'pgd': dict(name='pgd', eps=0.5)}}),
     'one threat model'),
    (lambda f, x, y: (f, x, y, {'attacks': {'pgd': dict(name='pgd', stepz=3)}}),
     r"attacks\['pgd'\]: unknown field"),
    (lambda f, x, y: (f, x, y, {'batch_size': 0}), 'batch_size=0'),
]
_BAD_IDS = ['0..255 floats', 'int images', 'NCHW', 'no channel axis', 'label count', 'one-hot',
            'float labels', 'negative label', 'label beyond logits', 'logits shape',
            'tuple output', 'not JAX', 'norm', 'eps scale', 'suite', 'num_examples',
            'other eps', 'attack field', 'batch_size']


@pytest.mark.parametrize('change, match', _BAD, ids=_BAD_IDS)
def test_bad_input_is_a_clear_error_before_anything_runs(change, match):
  fn, x, y, kwargs = change(*_good())
  with pytest.raises(ValueError, match=match):
    robust_jax.evaluate(fn, x, y, verbose=False, **kwargs)


def test_settings_errors_are_config_errors():
  with pytest.raises(errors.ConfigError, match='stepz'):
    api._attacks({'pgd': dict(name='pgd', stepz=1)}, 'linf', 0.1)


def test_import_robust_jax_stays_light():
  code = ('import sys, robust_jax; assert "robust_jax.eval.robust" not in sys.modules; '
          'from robust_jax import evaluate; from robust_jax.eval import api; '
          'assert evaluate is api.evaluate and robust_jax.evaluate is api.evaluate')
  subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def noisy_brightness(params, apply, sigma=10 / 255):
  """A random model: the brightness model behind a random shift of the whole image's brightness
  (one draw per call, from `key`), so examples near a band's edge flip from draw to draw."""
  def noisy(x, key):
    return apply(params, x + sigma * jax.random.normal(key, (x.shape[0], 1, 1, 1)))
  return noisy


def test_a_random_function_draws_per_example_whatever_the_batch():
  x, y = brightness_data(n=24, near_edge=24)
  params, apply = brightness_model()
  noisy = noisy_brightness(params, apply)
  noise = dict(name='pgd', steps=1, step_size=1e-6, random_start=True)
  run = lambda **kw: robust_jax.evaluate(  # noqa: E731
      noisy, x, y, random=True, norm='Linf', eps=4 / 255, attacks={'noise': noise},
      verbose=False, **kw)
  seven = run(batch_size=7, suite=None, sanity_checks=False)
  # The draws matter: the random model's clean verdicts are not the deterministic model's.
  plain = np.asarray(jnp.argmax(apply(params, jnp.asarray(x)), -1)) == y
  assert (seven['per_example']['clean'] != plain).any()
  # Each example draws with its own key: the same verdicts in any batch.
  other = run(batch_size=24, suite=None, sanity_checks=False)
  for k, v in seven['per_example'].items():
    np.testing.assert_array_equal(other['per_example'][k], v, err_msg=k)
  # By default: AutoAttack's 'rand' suite (EOT), and the sanity checks see the randomness.
  full = run(batch_size=12, num_examples=12, sanity_examples=12)
  assert full['suite']['name'] == 'rand'
  check = next(c for c in full['sanity_checks'] if c['name'] == 'deterministic model')
  assert check['verdict'] == 'WARN' and 'EOT with 20 samples' in check['detail']
  np.testing.assert_array_equal(full['per_example']['clean'], seven['per_example']['clean'][:12])
  # A function declared random must take the key.
  with pytest.raises(ValueError, match=r'logits_fn\(x, key\)'):
    robust_jax.evaluate(lambda v: apply(params, v), x, y, random=True, verbose=False)


def test_a_workdir_evaluation_resumes_from_its_kept_batches_and_only_for_the_same_model(
    tmp_path):
  x, y = brightness_data(n=20)
  params, apply = brightness_model()
  kw = dict(suite=None, attacks={'fgsm': FGSM}, workdir=str(tmp_path), **QUIET)
  first = robust_jax.evaluate(lambda v: apply(params, v), x, y, **kw)
  kept = tmp_path / 'eval_progress' / 'clean.npz'
  with np.load(kept) as f:
    state = dict(f)
  assert state['done'].all()
  np.testing.assert_array_equal(state['correct'], first['per_example']['clean'])
  # Tamper with the kept clean verdicts: a resumed run reads them back instead of computing.
  state['correct'] = ~state['correct']
  np.savez(kept, **state)
  resumed = robust_jax.evaluate(lambda v: apply(params, v), x, y, **kw)
  np.testing.assert_array_equal(resumed['per_example']['clean'], ~first['per_example']['clean'])
  # Other weights in the closure (same function, same settings): the kept batches are not used.
  moved = jax.tree.map(lambda a: a, params)
  moved['centers'] = params['centers'] + 1 / 255
  other = robust_jax.evaluate(lambda v: apply(moved, v), x, y, **kw)
  direct = np.asarray(jnp.argmax(apply(moved, jnp.asarray(x)), -1)) == y
  np.testing.assert_array_equal(other['per_example']['clean'], direct)
  # Tampered again; resume=False computes afresh.
  with np.load(kept) as f:
    state = dict(f)
  state['correct'] = ~state['correct']
  np.savez(kept, **state)
  fresh = robust_jax.evaluate(lambda v: apply(moved, v), x, y, resume=False, **kw)
  np.testing.assert_array_equal(fresh['per_example']['clean'], direct)


def test_the_store_fingerprint_takes_any_params_pytree(tmp_path):
  """params with integer and PRNG-key leaves (an NNX state's RNG keys): the workdir's store
  works, and another key in params is another model."""
  x, y = brightness_data(n=12)
  params, apply = brightness_model()
  given = {'p': params, 'count': jnp.int32(3), 'key': jax.random.key(1)}
  run = lambda p: robust_jax.evaluate(  # noqa: E731
      lambda q, v: apply(q['p'], v), x, y, params=p, suite=None, attacks={'fgsm': FGSM},
      workdir=str(tmp_path), **QUIET)
  first = run(given)
  tgt = api.target_lib.of_function(lambda q, v: apply(q['p'], v), given)
  config = api._config(0, {}, '', 'linf', 4 / 255, 12, 12, False, 0)
  again = api.fingerprint(tgt, x, y, config)
  assert again == api.fingerprint(tgt, x, y, config)
  other = api.target_lib.of_function(lambda q, v: apply(q['p'], v),
                                     {**given, 'key': jax.random.key(2)})
  assert api.fingerprint(other, x, y, config) != again
  np.testing.assert_array_equal(run(given)['per_example']['clean'], first['per_example']['clean'])
