"""Defense facets: each defense's, read without building it, agree with what its factory builds;
outside robust_jax/defenses no code compares `config.defense.name`."""

import ast
import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

from robust_jax import defenses
from robust_jax import errors
from robust_jax.defenses import descriptor
from robust_jax.defenses import transforms
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F = defenses.Facets
ADVERSARIAL = F(training_attack=True)
EXPECTED = {
    'standard': F(), 'pgd_at': ADVERSARIAL, 'trades': ADVERSARIAL, 'mart': ADVERSARIAL,
    'fgsm_rs': ADVERSARIAL, 'free_at': F(training_attack=True, replays=8), 'awp': ADVERSARIAL,
    'distillation': F(), 'ensemble_at': ADVERSARIAL,
    'feature_squeezing': F(deployment='detector'),
    'ensemble': F(trainable=False, deployment='ensemble'),
    **{name: F(deployment='transform', certifiable=name == 'gaussian_noise')
       for name in transforms.TRANSFORMS},
}


def _shipped(name):
  """The config of configs/defenses/<name>.py (one per defense and input transformation)."""
  path = os.path.join(ROOT, 'configs', 'defenses', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'_facets_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_every_defense_and_transform_has_its_facets():
  assert set(EXPECTED) == set(defenses.DEFENSES) | set(transforms.TRANSFORMS)
  for name, expected in EXPECTED.items():
    # The ensemble's members, the teacher, the static models need not exist: nothing is built.
    got = defenses.facets(_shipped(name))
    assert got == expected, name
    assert got.deployment in descriptor.DEPLOYMENTS, name


def test_free_at_replays_are_its_field_and_what_the_step_replays():
  config = _shipped('free_at')
  config.defense.replays = 5
  assert defenses.facets(config).replays == 5 == defenses.build(config).replays


def test_an_unknown_name_is_a_config_error():
  with pytest.raises(errors.ConfigError, match=r"defense.name='magic'; valid: \[.*'pgd_at'"):
    defenses.facets(helpers.quick_config(**{'defense.name': 'magic'}))


def _moves_the_input(config):
  """Whether the built defense's training step perturbs the input (its attack or replays)."""
  d = defenses.build(config)  # static models and teachers load in training, not here
  if d.replay_update is not None:
    return True
  x = jax.random.uniform(jax.random.key(0), (4, 6, 6, 1))
  w = jax.random.normal(jax.random.key(1), (36, 3))
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w
  keys = jax.random.split(jax.random.key(2), 4)
  x_adv = d.perturb(logits_fn, x, jnp.array([0, 1, 2, 0]), keys)
  return bool(jnp.any(x_adv != x))


@pytest.mark.parametrize('name', [n for n, f in EXPECTED.items() if f.trainable])
def test_training_attack_says_whether_the_built_step_perturbs_the_input(name):
  config = _shipped(name)
  assert _moves_the_input(config) == defenses.facets(config).training_attack


# ---- no comparisons of defense.name outside robust_jax/defenses


def _is_defense_name(node):
  """`<x>.defense.name`, `<x>.defense['name']` or `<x>.defense.get('name')`."""
  def on_defense(v):
    return isinstance(v, ast.Attribute) and v.attr == 'defense'
  if isinstance(node, ast.Attribute):
    return node.attr == 'name' and on_defense(node.value)
  if isinstance(node, ast.Subscript):
    key = node.slice
    return on_defense(node.value) and isinstance(key, ast.Constant) and key.value == 'name'
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
    args = node.args
    return (node.func.attr == 'get' and on_defense(node.func.value) and args
            and isinstance(args[0], ast.Constant) and args[0].value == 'name')
  return False


def name_comparisons(source):
  """Line numbers of comparisons (==, !=, in, not in, is) of a defense's name in `source`, the
  name read directly or through a variable assigned it; f-string messages do not compare."""
  tree = ast.parse(source)
  aliases = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
             and _is_defense_name(node.value) for t in node.targets if isinstance(t, ast.Name)}

  def is_name(n):
    if isinstance(n, (ast.Tuple, ast.List, ast.Set)):  # x in (config.defense.name, ...)
      return any(is_name(e) for e in n.elts)
    return _is_defense_name(n) or (isinstance(n, ast.Name) and n.id in aliases)
  return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
          and any(is_name(n) for n in [node.left, *node.comparators])]


def test_the_source_check_finds_comparisons_and_spares_messages():
  found = name_comparisons(
      "if config.defense.name == 'standard': pass\n"
      "if 'x' in (c.defense.name, 1): pass\n"
      "ok = c.defense['name'] not in DETECTORS\n"
      "ok = c.defense.get('name') != 'a'\n"
      "name = c.defense.name\n"
      "ok = name in DEFENSES\n"
      "msg = f'defense.name={config.defense.name!r}'\n"
      "print(config.defense.name)\n")
  assert found == [1, 2, 3, 4, 6]


def test_nothing_outside_defenses_compares_a_defense_name():
  found = []
  for path in [os.path.join(ROOT, 'launch.py')] + [
      os.path.join(d, f) for top in ('robust_jax', 'configs', 'benchmarks', 'scripts')
      for d, _, files in os.walk(os.path.join(ROOT, top)) for f in files if f.endswith('.py')]:
    rel = os.path.relpath(path, ROOT)
    if rel.startswith(os.path.join('robust_jax', 'defenses') + os.sep):
      continue
    with open(path) as f:
      found += [f'{rel}:{line}' for line in name_comparisons(f.read())]
  assert not found, (f'defense.name compared at {found}: read robust_jax.defenses.facets(config) '
                     '(descriptor.py) instead, adding a facet there if none says it.')


def test_a_run_builds_its_defense_once_and_passes_it_to_training(tmp_path, monkeypatch):
  from robust_jax import experiment  # pylint: disable=g-import-not-at-top
  c = helpers.quick_config(**{'defense.name': 'free_at', 'defense.replays': 2,
                              'train.steps': 2, 'eval.num_examples': 8, 'eval.suite': ''})
  c.train_attack = _shipped('free_at').train_attack
  c.eval.attacks = {'fgsm': dict(name='fgsm', eps=0.1)}
  monkeypatch.setattr(experiment.data_lib, 'load',
                      lambda cfg: helpers.tiny_dataset(n_train=32, n_test=8))
  built, passed, fit = [], [], experiment.loop.fit
  build = defenses.build

  def counting_build(*args, **kwargs):
    built.append(build(*args, **kwargs))
    return built[-1]

  def recording_fit(*args, defense=None, **kwargs):
    passed.append(defense)
    return fit(*args, defense=defense, **kwargs)

  monkeypatch.setattr(defenses, 'build', counting_build)
  monkeypatch.setattr(experiment.loop, 'fit', recording_fit)
  results = experiment.train_and_evaluate(c, str(tmp_path), progress=False)
  assert len(built) == 1  # built once, when the config was validated
  (resolved,) = passed
  assert isinstance(resolved, defenses.Resolved) and resolved.objective is built[0]
  assert resolved.name == 'free_at' and resolved.facets.replays == 2
  assert resolved.train_attack['name'] == 'fgsm'
  assert results['train_steps'] == 2
