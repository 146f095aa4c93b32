"""robust_jax.xla_flags: the XLA:CPU settings added at import, and that this jaxlib accepts them."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import jaxlib
import ml_collections
import numpy as np
import pytest

import robust_jax
from configs import default
from robust_jax import attacks
from robust_jax import benchmark
from robust_jax import model_fns
from robust_jax import models
from robust_jax import parallel
from robust_jax import xla_flags
from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wanted_keeps_the_users_value_and_checks_the_version():
  flag = xla_flags.FLAGS[0]
  assert xla_flags.wanted('', '0.10.2') == [flag]
  assert xla_flags.wanted(f'--foo {flag.split("=")[0]}=bar', '0.10.2') == []  # the user's wins
  assert xla_flags.wanted('', '9.0.0') == []  # a jaxlib these flags were not checked on


def test_imported_robust_jax_set_the_flags_and_xla_accepts_them():
  code = ('import os, robust_jax, jax; jax.numpy.ones(2).block_until_ready(); '
          'print(os.environ.get("XLA_FLAGS", ""))')
  env = {**conftest.SUBPROCESS_ENV}
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]  # an unknown flag would abort XLA
  if any(jaxlib.version.__version__.startswith(v) for v in xla_flags.CHECKED_JAXLIB):
    assert all(f in out.stdout for f in xla_flags.FLAGS), out.stdout
  off = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       env={**env, xla_flags.ENV_SWITCH: '0'}, timeout=120)
  assert off.returncode == 0 and not any(f in off.stdout for f in xla_flags.FLAGS)


def test_program_options_are_for_the_gradient_attacks_and_yield_to_the_user(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', xla_flags.FLAGS[0])
  checked = any(jaxlib.version.__version__.startswith(v) for v in xla_flags.CHECKED_JAXLIB)
  on_cpu = jax.default_backend() == 'cpu'
  old = {'xla_cpu_use_fusion_emitters': False} if checked and on_cpu else None
  for name in ('pgd', 'fgsm', 'apgd_ce'):
    assert xla_flags.program_options(name) == old
  for name in ('apgd_t', 'fab_t', 'square', 'cw_l2', None):
    assert xla_flags.program_options(name) is None
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')  # accelerators get no options
  assert xla_flags.program_options('pgd') is None
  monkeypatch.undo()
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_use_fusion_emitters=true')  # the user's value wins
  assert xla_flags.program_options('pgd') is None
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.setenv(xla_flags.ENV_SWITCH, '0')
  assert xla_flags.program_options('pgd') is None


def _small_cnn():
  model = models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=10,
                       mean=(0.5,), std=(0.25,))
  variables = model_fns.init_variables(model, jax.random.key(0), (28, 28, 1))
  return model, model_fns.logits_fn(model, variables['params'], {})


def test_program_options_change_no_result():
  """APGD-CE and PGD give the same adversarial points with and without them, up to float32
  rounding (bit for bit at XLA's default optimisation on the machines measured; the tests
  compile with it off, where a few points differ in the last bit)."""
  _, logits_fn = _small_cnn()
  x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
  y = jnp.arange(16) % 10
  for cfg in (dict(name='apgd_ce', eps=0.1, steps=5), dict(name='pgd', eps=0.1, steps=5)):
    attack = attacks.build(cfg)
    outs = [np.asarray(jax.jit(lambda a, b, f=attack: f(logits_fn, a, b, jax.random.key(2)),
                               compiler_options=options)(x, y))
            for options in (None, xla_flags.program_options(cfg['name']))]
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-6, err_msg=cfg['name'])
    assert np.abs(outs[0] - np.asarray(x)).max() > 0.05  # the attack moved the points


def _unknown_option_for_pgd(monkeypatch):
  """Makes program_options name an option XLA does not know for 'pgd', so that a program built
  with them fails to compile, naming it: proof that the program was built with them."""
  monkeypatch.setattr(xla_flags, 'program_options',
                      lambda name: {'xla_no_such_option': True} if name == 'pgd' else None)


def test_the_evaluation_and_the_harness_compile_attacks_with_their_program_options(monkeypatch):
  _unknown_option_for_pgd(monkeypatch)
  model, logits_fn = _small_cnn()
  x = np.asarray(jax.random.uniform(jax.random.key(1), (8, 28, 28, 1)))
  y = np.arange(8) % 10
  run = lambda name: robust_jax.evaluate(  # noqa: E731
      logits_fn, x, y, eps=0.1, suite=None, attacks={'a': dict(name=name, steps=2)},
      sanity_checks=False, verbose=False)
  run('apgd_ce')  # no options for it here, so it compiles
  with pytest.raises(Exception, match='xla_no_such_option'):
    run('pgd')
  c = default.get_config()
  c.benchmark.batch_size, c.benchmark.attack.steps, c.benchmark.attack.name = 8, 2, 'pgd'
  with pytest.raises(Exception, match='xla_no_such_option'):
    benchmark.measure_attack(c, model, (28, 28, 1), parallel.make_mesh(), 8, {'gflops': 1.0})
