"""Free AT, AWP, distillation, ensemble AT and the catastrophic-overfitting monitor.

Each objective is checked against a computation written out here with plain JAX (no shard_map),
on 1 and 4 devices; the monitor on planted collapses; resumes bitwise.
"""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import data as data_lib
from robust_jax import defenses
from robust_jax import errors
from robust_jax import model_fns
from robust_jax import models
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax import validation
from robust_jax.attacks import objectives
from robust_jax.defenses import awp
from robust_jax.defenses import distillation
from robust_jax.defenses import ensemble_at
from robust_jax.training import checkpoint
from robust_jax.training import loop
from robust_jax.training import monitor
from robust_jax.training import optim
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 0.1
LR = 0.05
SMALL = (8, 8, 1)


def _config(name, **overrides):
  """Plain SGD (no momentum): an update is exactly params - LR * grad."""
  if name == 'free_at':  # free AT's step: FGSM of eps, no random start (Shafahi et al.)
    overrides = {'train_attack': dict(name='fgsm', eps=EPS, step_size=EPS, random_start=False,
                                      track_best=False), **overrides}
  return helpers.quick_config(**{
      'defense.name': name, 'model.name': 'small_cnn', 'optim.name': 'sgd',
      'optim.learning_rate': LR, 'optim.momentum': 0.0, 'train_attack.eps': EPS,
      'train_attack.step_size': 0.05, **overrides})


def _model(config, dataset):
  return models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)


def _fresh(config, dataset, model, mesh, carry_shape=None):
  tx, _ = optim.make_optimizer(config.optim, 100, 10)
  state = state_lib.init_state(model, tx, rng.root_key(config.seed, rng.INIT),
                               dataset.train_images.shape[1:], carry_shape=carry_shape)
  return tx, parallel.replicate(state, mesh)


def _batch(config, dataset, step):
  idx = data_lib.train_indices(config.seed, step, config.train.batch_size,
                               len(dataset.train_labels))
  return dataset.train_images[idx], dataset.train_labels[idx]


def _steps(config, dataset, devices, num_steps, carry_shape=None):
  """`num_steps` train steps; returns (state, metrics of the last) on the host."""
  mesh = parallel.make_mesh(devices)
  model = _model(config, dataset)
  tx, state = _fresh(config, dataset, model, mesh, carry_shape)
  step_fn = step_lib.make_train_step(model, tx, defenses.build(config), config, mesh)
  for step in range(num_steps):
    images, labels = _batch(config, dataset, step)
    batch = parallel.shard_batch({'image': images, 'label': labels}, mesh)
    state, metrics = step_fn(state, batch, rng.step_key(config.seed, step))
  return jax.device_get(state), jax.device_get(metrics)


def _initial_params(config, dataset):
  model = _model(config, dataset)
  v = model_fns.init_variables(model, rng.root_key(config.seed, rng.INIT),
                               dataset.train_images.shape[1:])
  return model, v['params']


def _mean_ce(model, params, x, y):
  logits = model_fns.forward_train(model, params, {}, x, jax.random.key(0))[0]
  return jnp.mean(objectives.cross_entropy(logits, jax.nn.one_hot(y, 10)))


def _close(a_tree, b_tree, atol=1e-5):
  for a, b in zip(jax.tree.leaves(a_tree), jax.tree.leaves(b_tree)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


def _np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# ---- free adversarial training (Shafahi et al. 2019)

def test_free_replay_update_is_an_eps_sign_step_projected_onto_the_ball():
  update = defenses.build(_config('free_at')).replay_update
  delta = jnp.array([[0.0, 0.08, -0.1, 0.05]])
  grad = jnp.array([[1.0, 2.0, -3.0, -0.5]])
  np.testing.assert_allclose(update(delta, grad), [[0.1, 0.1, -0.1, -0.05]], atol=1e-7)


def _free_reference(config, dataset, num_steps):
  """Algorithm 1 of Shafahi et al. written out: replays, one backward each, delta carried."""
  model, params = _initial_params(config, dataset)
  b = config.train.batch_size
  delta = jnp.zeros((b,) + dataset.train_images.shape[1:])
  grad_fn = jax.grad(lambda p, d, x, y: _mean_ce(model, p, jnp.clip(x + d, 0, 1), y), (0, 1))
  for step in range(num_steps):
    images, y = _batch(config, dataset, step)
    x = images.astype(np.float32) / 255.0
    for _ in range(config.defense.replays):
      g_params, g_delta = grad_fn(params, delta, x, y)
      params = jax.tree.map(lambda p, g: p - LR * g, params, g_params)
      delta = jnp.clip(delta + EPS * jnp.sign(g_delta), -EPS, EPS)
  return params, np.asarray(delta)


@pytest.mark.parametrize('num_devices', [pytest.param(1, marks=pytest.mark.slow), 4])
def test_free_at_matches_the_replay_loop_and_carries_delta_across_batches(num_devices):
  dataset = helpers.tiny_dataset(n_train=32, n_test=8, shape=SMALL)
  config = _config('free_at', **{'defense.replays': 3})
  carry = (config.train.batch_size,) + SMALL
  state, metrics = _steps(config, dataset, jax.devices()[:num_devices], 2, carry)
  params, delta = _free_reference(config, dataset, 2)
  _close(state.params, params)
  assert np.abs(state.carry).max() <= EPS + 1e-7 and np.abs(state.carry).max() == pytest.approx(EPS)
  # Signs of near-zero gradients may differ in rounding; nearly every pixel must agree.
  assert np.mean(np.isclose(state.carry, delta, atol=1e-6)) > 0.99
  assert int(metrics['count']) == 3 * config.train.batch_size  # every replay counts
  assert [int(c) for c in jax.tree.leaves(state.opt_state)] == [6]  # 2 steps x 3 updates
  assert int(state.step) == 2


def test_free_at_divides_the_epochs_by_the_replays():
  config = _config('free_at', **{'defense.replays': 4, 'train.steps': 0, 'train.epochs': 3})
  assert loop.num_train_steps(config, 64) == 6  # 3 epochs x 8 batches / 4 replays
  config.train.monitor_examples = 16
  assert loop.num_train_steps(config, 64) == 5  # ceil(3 x 6 / 4): held-out images excluded
  config.defense.replays = 1
  assert loop.num_train_steps(config, 64) == 18


def test_free_at_resumes_exactly_and_its_checkpoints_load_as_plain_states(tmp_path):
  dataset = helpers.tiny_dataset(n_train=32, n_test=8, shape=SMALL)
  config = _config('free_at', **{'defense.replays': 2, 'train.steps': 4})
  half = _config('free_at', **{'defense.replays': 2, 'train.steps': 2})
  mesh = parallel.make_mesh()
  model = _model(config, dataset)
  straight = loop.fit(config, str(tmp_path / 'a'), dataset, model, mesh, progress=False).state
  loop.fit(half, str(tmp_path / 'b'), dataset, model, mesh, progress=False)
  resumed = loop.fit(config, str(tmp_path / 'b'), dataset, model, mesh, progress=False).state
  assert np.abs(np.asarray(straight.carry)).max() > 0
  for a, b in zip(jax.tree.leaves(jax.device_get(straight)), jax.tree.leaves(
      jax.device_get(resumed))):
    np.testing.assert_array_equal(a, b)
  # What loaders (evaluation, load_model) build: a plain TrainState.
  tx, _ = optim.make_optimizer(config.optim, 1, 1)
  plain, step = checkpoint.load(str(tmp_path / 'b'), state_lib.init_state(
      model, tx, jax.random.key(0), SMALL))
  assert step == 4 and type(plain) is state_lib.TrainState
  _close(plain.params, jax.device_get(straight.params), atol=0)


# ---- AWP (Wu et al. 2020)

def test_awp_perturbation_is_layerwise_relative_and_skips_biases():
  r = np.random.default_rng(0)
  params = {'conv': {'kernel': r.normal(size=(3, 3, 1, 4)), 'bias': r.normal(size=4)},
            'dense': {'kernel': r.normal(size=(5, 2)) * 7, 'bias': r.normal(size=2)}}
  grads = jax.tree.map(lambda w: r.normal(size=w.shape), params)
  v = awp.perturbation(params, grads, 0.01)
  for name in ('conv', 'dense'):
    w, g, vk = params[name]['kernel'], grads[name]['kernel'], np.asarray(v[name]['kernel'])
    np.testing.assert_allclose(np.linalg.norm(vk), 0.01 * np.linalg.norm(w), rtol=1e-5)
    np.testing.assert_allclose(vk / np.linalg.norm(vk), g / np.linalg.norm(g), atol=1e-6)
    assert not np.any(v[name]['bias'])
  off = awp.make_weight_perturb(gamma=0.01, warmup_epochs=2.0)
  assert not any(np.any(x) for x in jax.tree.leaves(off(params, grads, jnp.float32(1.9))))
  assert any(np.any(x) for x in jax.tree.leaves(off(params, grads, jnp.float32(2.0))))


def _awp_reference(config, dataset, gamma):
  """One AWP step by hand: x_adv at w, v from the gradient at w, update from the one at w + v."""
  model, params = _initial_params(config, dataset)
  images, y = _batch(config, dataset, 0)
  x = images.astype(np.float32) / 255.0
  keys = rng.example_keys(rng.step_key(config.seed, 0), rng.ATTACK, jnp.arange(len(y)))
  attack_fn = model_fns.logits_fn(model, params, {}, 'eval')
  x_adv = defenses.build(config).perturb(attack_fn, jnp.asarray(x), jnp.asarray(y), keys)
  grad_fn = jax.grad(lambda p: _mean_ce(model, p, x_adv, y))
  v = awp.perturbation(params, grad_fn(params), gamma)
  g = grad_fn(jax.tree.map(jnp.add, params, v))
  return jax.tree.map(lambda p, gi: p - LR * gi, params, g), params, v


@pytest.mark.parametrize('num_devices', [pytest.param(1, marks=pytest.mark.slow), 4])
def test_awp_step_applies_the_gradient_at_the_perturbed_weights_to_the_weights(num_devices):
  dataset = helpers.tiny_dataset(n_train=32, n_test=8, shape=SMALL)
  config = _config('awp', **{'defense.awp_gamma': 0.05, 'train_attack.steps': 1})
  state, _ = _steps(config, dataset, jax.devices()[:num_devices], 1)
  expected, w0, v = _awp_reference(config, dataset, 0.05)
  _close(state.params, expected)
  # The perturbation is large enough to matter and is not left in the weights.
  plain = jax.tree.map(lambda a, b: a + b, expected, v)
  assert max(float(np.abs(a - b).max()) for a, b in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(plain))) > 1e-3
  assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4 for a, b in zip(
      jax.tree.leaves(state.params), jax.tree.leaves(w0)))


@pytest.mark.slow
def test_awp_before_its_warmup_is_its_base_defense():
  dataset = helpers.tiny_dataset(n_train=32, n_test=8, shape=SMALL)
  base = _config('pgd_at', **{'train_attack.steps': 1})
  warm = _config('awp', **{'train_attack.steps': 1, 'defense.awp_warmup': 5.0})
  a, _ = _steps(base, dataset, jax.devices(), 1)
  b, _ = _steps(warm, dataset, jax.devices(), 1)
  _close(a.params, b.params, atol=1e-7)


# ---- defensive distillation (Papernot et al. 2016)

def test_distillation_soft_labels_and_losses_match_numpy():
  r = np.random.default_rng(1)
  teacher = r.normal(0, 50, (6, 10)).astype(np.float32)
  student = r.normal(0, 50, (6, 10)).astype(np.float32)
  y = r.integers(0, 10, 6)
  onehot = np.eye(10, dtype=np.float32)[y]
  for t in (1.0, 100.0):
    soft = _np_softmax(teacher.astype(np.float64) / t)
    np.testing.assert_allclose(distillation.soft_labels(teacher, t), soft, rtol=1e-4, atol=1e-7)
    log_q = np.log(_np_softmax(student.astype(np.float64) / t))
    np.testing.assert_allclose(distillation.tempered_cross_entropy(student, soft, t),
                               -(soft * log_q).sum(-1), rtol=1e-4, atol=1e-6)
    per_example, logits, _ = distillation.make_teacher_loss(t)(
        lambda v: (v, {}), jnp.asarray(student), None, jnp.asarray(onehot))
    np.testing.assert_allclose(per_example, -log_q[np.arange(6), y], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(logits, student)  # deployed at T = 1: the raw logits
  # A high temperature softens: the soft labels' entropy grows with T.
  entropy = [float(-(p * np.log(p + 1e-30)).sum(-1).mean())
             for p in (_np_softmax(teacher / 1.0), _np_softmax(teacher / 100.0))]
  assert entropy[1] > entropy[0] + 0.5


def _saved_run(path, config, seed, logit_scale=1.0):
  """A workdir as training leaves it (config.json, checkpoints/), with freshly initialised
  weights of a 28x28 model, the last layer's scaled; returns (model, params)."""
  info = data_lib.DATASETS[config.data.name]
  model = models.build(config.model, num_classes=10, mean=info['mean'], std=info['std'])
  tx, _ = optim.make_optimizer(config.optim, 1, 1)
  state = state_lib.init_state(model, tx, jax.random.key(seed), info['shape'])
  params = {**state.params, 'logits': jax.tree.map(lambda w: w * logit_scale,
                                                   state.params['logits'])}
  state = state.replace(params=params)
  saver = checkpoint.Checkpointer(str(path))
  saver.save(1, state=state)
  saver.close()
  with open(path / 'config.json', 'w') as f:
    json.dump(config.to_dict(), f)
  return model, state.params


def test_distillation_student_step_learns_the_teachers_soft_labels(tmp_path):
  teacher_cfg = _config('distillation', **{'defense.temperature': 20.0, 'train.batch_size': 8})
  teacher_model, teacher_params = _saved_run(tmp_path, teacher_cfg, seed=5, logit_scale=300.0)
  config = _config('distillation', **{'defense.temperature': 20.0,
                                      'defense.teacher': str(tmp_path)})
  frozen, bind = defenses.build(config).load(run_io.load_model)
  _close(frozen['params'], teacher_params, atol=0)
  dataset = helpers.tiny_dataset(n_train=32, n_test=8)
  state, metrics = _steps(config, dataset, jax.devices(), 1)
  model, params = _initial_params(config, dataset)
  images, y = _batch(config, dataset, 0)
  x = images.astype(np.float32) / 255.0
  t_logits = np.asarray(teacher_model.apply({'params': teacher_params}, x, train=False), float)
  s_logits = np.asarray(model.apply({'params': params}, x, train=False), float)
  soft = _np_softmax(t_logits / 20.0)
  expected = -(soft * np.log(_np_softmax(s_logits / 20.0))).sum(-1).sum()
  assert float(metrics['loss_sum']) == pytest.approx(expected, rel=1e-4)
  # The tolerance above tells this loss apart from the hard labels' and from T = 1's.
  hard = -np.log(_np_softmax(s_logits / 20.0)[np.arange(len(y)), y]).sum()
  t_one = -(_np_softmax(t_logits) * np.log(_np_softmax(s_logits))).sum()
  assert min(abs(hard - expected), abs(t_one - expected)) > 5e-4 * abs(expected)


# ---- ensemble adversarial training (Tramer et al. 2018)

_W = [jax.random.normal(jax.random.key(k), (8 * 8 * 1, 10)) for k in (11, 12, 13)]


def _linear(w):
  return lambda x: x.reshape(x.shape[0], -1) @ w


def _fgsm_on_own_prediction(fn, x):
  pred = jnp.argmax(fn(x), -1)
  g = jax.grad(lambda v: jnp.sum(objectives.cross_entropy(fn(v), jax.nn.one_hot(pred, 10))))(x)
  return np.clip(np.asarray(x) + EPS * np.sign(np.asarray(g)), 0, 1)


def test_ensemble_source_is_drawn_per_batch_among_all_models():
  picks = [int(ensemble_at.source_index(jax.random.key(k), 3)) for k in range(300)]
  assert set(picks) == {0, 1, 2} and min(np.bincount(picks)) > 60
  assert int(ensemble_at.source_index(jax.random.key(7), 3)) == picks[7]


def test_ensemble_perturbation_comes_from_the_drawn_source():
  config = _config('ensemble_at', **{'defense.static_models': 'unused', 'train_attack': dict(
      name='fgsm', eps=EPS, step_size=EPS, track_best=False)})
  attack = defenses.build(config).perturb
  x = jax.random.uniform(jax.random.key(4), (8,) + SMALL)
  keys = jax.random.split(jax.random.key(5), 8)
  seen = set()
  for k in range(12):
    key = jax.random.key(100 + k)
    source = int(ensemble_at.source_index(key, 3))
    seen.add(source)
    perturb = ensemble_at.make_perturb(attack, [_linear(_W[1]), _linear(_W[2])], key)
    x_adv = perturb(_linear(_W[0]), x, None, keys)
    np.testing.assert_allclose(x_adv, _fgsm_on_own_prediction(_linear(_W[source]), x), atol=1e-6)
  assert seen == {0, 1, 2}


def test_ensemble_loss_is_half_clean_half_adversarial():
  r = np.random.default_rng(2)
  clean, adv = r.normal(0, 2, (5, 10)), r.normal(0, 2, (5, 10))
  y = r.integers(0, 10, 5)
  per_example, logits, _ = ensemble_at.loss(lambda v: (v, {}), jnp.asarray(clean),
                                            jnp.asarray(adv), jnp.eye(10)[y])
  rows = np.arange(5)
  expected = -0.5 * (np.log(_np_softmax(clean)[rows, y]) + np.log(_np_softmax(adv)[rows, y]))
  np.testing.assert_allclose(per_example, expected, rtol=1e-4)
  np.testing.assert_allclose(logits, clean, rtol=1e-6)


def test_ensemble_step_trains_on_the_static_models_examples(tmp_path):
  static_cfg = _config('standard')
  static_model, static_params = _saved_run(tmp_path, static_cfg, seed=9)
  config = _config('ensemble_at', **{
      'defense.static_models': f' {tmp_path} ',
      'train_attack': dict(name='fgsm', eps=EPS, step_size=EPS, track_best=False)})
  dataset = helpers.tiny_dataset(n_train=32, n_test=8)
  step = next(s for s in range(50)
              if int(ensemble_at.source_index(rng.step_key(config.seed, s), 2)) == 1)
  mesh = parallel.make_mesh()
  model = _model(config, dataset)
  tx, state = _fresh(config, dataset, model, mesh)
  step_fn = step_lib.make_train_step(model, tx, defenses.build(config), config, mesh)
  images, y = _batch(config, dataset, step)
  batch = parallel.shard_batch({'image': images, 'label': y}, mesh)
  _, metrics = step_fn(state, batch, rng.step_key(config.seed, step))
  x = jnp.asarray(images.astype(np.float32) / 255.0)
  static_fn = lambda v: static_model.apply({'params': static_params}, v, train=False)  # noqa: E731
  x_adv = _fgsm_on_own_prediction(static_fn, x)
  _, params = _initial_params(config, dataset)
  f = lambda v: np.asarray(model.apply({'params': params}, v, train=False), float)  # noqa: E731
  rows = np.arange(len(y))
  expected = -0.5 * (np.log(_np_softmax(f(x))[rows, y])
                     + np.log(_np_softmax(f(jnp.asarray(x_adv)))[rows, y])).sum()
  assert float(metrics['loss_sum']) == pytest.approx(expected, rel=1e-4)


# ---- catastrophic-overfitting monitor (Wong et al. 2020)

def _monitored(**overrides):
  return _config('standard', **{'train.steps': 0, 'train.epochs': 2, 'train.monitor_examples': 16,
                                'train.monitor_attack.steps': 2, 'checkpoint.every_steps': 6,
                                **overrides})


def _records(path):
  with open(os.path.join(path, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_monitor_logs_held_out_accuracy_each_epoch_and_trains_without_them(tmp_path,
                                                                           monkeypatch):
  dataset = helpers.tiny_dataset(n_train=64, n_test=8, shape=SMALL)
  mesh = parallel.make_mesh()
  config = _monitored()
  model = _model(config, dataset)
  sampled = []
  real_indices = data_lib.train_indices
  monkeypatch.setattr(data_lib.batching, 'train_indices',  # where host_batch looks it up
                      lambda *a: sampled.append(real_indices(*a)) or sampled[-1])
  result = loop.fit(config, str(tmp_path / 'a'), dataset, model, mesh, progress=False)
  # Training sampled the first 48 images only, each once an epoch (batch order as without the
  # monitor on those 48).
  assert len(sampled) == 12 and np.concatenate(sampled).max() == 47
  assert sorted(np.concatenate(sampled[:6])) == list(range(48))
  logged = {r['step']: r for r in _records(tmp_path / 'a') if 'monitor_pgd_accuracy' in r}
  assert sorted(logged) == [6, 12]  # 48 training images / 8 = 6 steps an epoch
  history = result.monitor['history']
  assert [h['step'] for h in history] == [6, 12] and result.monitor['stopped_at'] is None
  # The clean number is the final weights' accuracy on the last 16 training images.
  x = dataset.train_images[48:].astype(np.float32) / 255.0
  pred = np.argmax(model.apply({'params': jax.device_get(result.state.params)}, x, train=False), -1)
  assert history[-1]['clean_accuracy'] == np.mean(pred == dataset.train_labels[48:])
  assert logged[12]['monitor_clean_accuracy'] == history[-1]['clean_accuracy']
  assert 0 <= logged[12]['monitor_pgd_accuracy'] <= logged[12]['monitor_clean_accuracy']
  # A resumed run monitors and trains exactly as the uninterrupted one.
  loop.fit(_monitored(**{'train.epochs': 1}), str(tmp_path / 'c'), dataset, model, mesh,
           progress=False)
  resumed = loop.fit(config, str(tmp_path / 'c'), dataset, model, mesh, progress=False)
  assert resumed.monitor['history'] == history
  assert [r['step'] for r in _records(tmp_path / 'c')] == list(range(1, 13))


def _plant(monkeypatch, robust):
  """The monitor measures `robust[i]` (clean 0.9) at its i-th check."""
  calls = iter(robust)
  monkeypatch.setattr(monitor.Monitor, 'accuracy', lambda self, state: (0.9, next(calls)))


@pytest.mark.parametrize('action', ['log', 'stop', 'rollback', 'best'])
def test_monitor_acts_on_a_planted_collapse(tmp_path, monkeypatch, action):
  dataset = helpers.tiny_dataset(n_train=64, n_test=8, shape=SMALL)
  mesh = parallel.make_mesh()
  config = _monitored(**{'train.epochs': 6, 'train.co_action': action, 'train.co_drop': 0.2})
  model = _model(config, dataset)
  _plant(monkeypatch, [0.5, 0.6, 0.45, 0.3, 0.3, 0.3])  # epoch 4: 0.6 - 0.3 > 0.2, a collapse
  result = loop.fit(config, str(tmp_path), dataset, model, mesh, progress=False)
  records = _records(tmp_path)
  collapses = [r['step'] for r in records if r.get('co_collapse')]
  assert result.monitor['collapses'][0]['best_step'] == 12
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  latest = ckpt.latest_step()
  ckpt.close()
  if action in ('log', 'best'):  # recorded at every collapsed epoch, training goes on
    assert collapses == [24, 30, 36] and latest == 36 and int(result.state.step) == 36
    assert result.monitor['stopped_at'] is None
    if action == 'log':
      assert result.best_state is None
      return
    # 'best' (Rice et al.'s early stopping) also hands back the best epoch's weights.
    assert int(result.best_state.step) == 12
    _plant(monkeypatch, [0.5, 0.6])
    reference = loop.fit(_monitored(), str(tmp_path / 'ref'), dataset, model, mesh,
                         progress=False)  # 12 steps on the same batches
    for a, b in zip(jax.tree.leaves(jax.device_get(result.best_state.params)),
                    jax.tree.leaves(jax.device_get(reference.state.params))):
      np.testing.assert_array_equal(a, b)
    return
  assert collapses == [24] and records[-1]['step'] == 24 and latest == 24
  assert result.monitor['stopped_at'] == 24
  if action == 'stop':
    assert int(result.state.step) == 24 and result.monitor['rolled_back_to'] is None
  else:
    assert int(result.state.step) == 12 and result.monitor['rolled_back_to'] == 12
    assert records[-1]['rolled_back_to_step'] == 12
    _plant(monkeypatch, [0.5, 0.6])
    reference = loop.fit(_monitored(), str(tmp_path / 'ref'), dataset, model, mesh,
                         progress=False)  # 12 steps on the same batches
    for a, b in zip(jax.tree.leaves(jax.device_get(result.state.params)),
                    jax.tree.leaves(jax.device_get(reference.state.params))):
      np.testing.assert_array_equal(a, b)
    tx, _ = optim.make_optimizer(config.optim, 1, 1)
    on_disk, step = checkpoint.load(str(tmp_path),
                                    state_lib.init_state(model, tx, jax.random.key(0), SMALL))
    assert step == 24 and int(on_disk.step) == 12  # evaluation reads the rolled-back weights
  # Running the same command again trains no further.
  again = loop.fit(config, str(tmp_path), dataset, model, mesh, progress=False)
  assert again.monitor['stopped_at'] == 24 and int(again.state.step) == int(result.state.step)
  assert _records(tmp_path) == records
  with open(tmp_path / 'monitor.json') as f:
    assert json.load(f)['stopped_at'] == 24


# ---- config fields and files

@pytest.mark.parametrize('field,value', [
    ('defense.replays', 0), ('defense.replays', 2.5), ('defense.awp_gamma', 0.0),
    ('defense.awp_base', 'free_at'), ('defense.awp_warmup', -1.0),
    ('defense.temperature', 0.0), ('defense.teacher', 3), ('defense.static_models', ' , '),
    ('train.monitor_examples', -1), ('train.co_action', 'retry'), ('train.co_drop', 0.0),
])
def test_bad_fields_raise_config_error_naming_them(field, value):
  name = {'replays': 'free_at', 'awp_gamma': 'awp', 'awp_base': 'awp', 'awp_warmup': 'awp',
          'temperature': 'distillation', 'teacher': 'distillation',
          'static_models': 'ensemble_at'}.get(field.split('.')[1], 'standard')
  config = _config(name)
  section, key = field.split('.')
  config[section][key] = None  # ConfigDict fields are typed; None lets any value in
  config[section][key] = value
  with pytest.raises(errors.ConfigError, match=rf'{field}='):
    validation.validate(config)


def test_monitor_must_leave_a_training_batch():
  config = _config('standard', **{'train.monitor_examples': 60, 'train.batch_size': 8})
  with pytest.raises(errors.ConfigError, match='train.monitor_examples=60'):
    monitor.held_out(config, 64)


def _load_config(name):
  path = os.path.join(ROOT, 'configs', 'defenses', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_zoo_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('name,defense', [
    ('free_at', 'free_at'), ('awp', 'awp'), ('distillation_teacher', 'distillation'),
    ('distillation', 'distillation'), ('ensemble_at', 'ensemble_at'), ('fgsm_rs', 'fgsm_rs')])
def test_config_files_validate_and_carry_naive_and_adaptive_attacks(name, defense):
  module = _load_config(name)
  config = module.get_config()
  assert config.defense.name == defense and config.train_attack.eps == pytest.approx(0.1)
  doc = ' '.join(module.__doc__.replace('\\\n', ' ').split())
  assert (f'python launch.py --config=configs/defenses/{name}.py --workdir=workdirs/{name}'
          in doc)
  validation.validate(config, num_devices=4)
  built = defenses.build(config)  # touches no disk: teachers and static models load in training
  naive = dict(config.eval.attacks.naive)
  assert (naive['name'], naive['steps'], naive['loss'], naive['eps'], naive['step_size']) == (
      'pgd', 40, 'ce', 0.1, 0.01)
  adaptive = dict(config.eval.attacks.adaptive)
  assert adaptive['loss'] in ('margin', 'dlr') and adaptive['eps'] == 0.1
  if defense != 'distillation':  # AutoAttack, whole or its two APGD attacks (zoo protocol)
    assert config.eval.suite in ('standard', 'apgd')
  if name == 'distillation':
    assert config.defense.teacher == 'workdirs/distillation_teacher' and built.load is not None
  if name == 'free_at':
    assert built.replays == config.defense.replays and config.train.monitor_examples > 0
