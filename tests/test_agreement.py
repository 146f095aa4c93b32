"""robust_jax's attacks agree with torchattacks' PyTorch ports of the authors' code.

Skipped unless torch and torchattacks import: they are development-only and live in .venv-ref, never
in .venv (see requirements-ref.txt). Run with

  .venv-ref/bin/python -m pytest tests/test_agreement.py

The model is a random-init small_cnn labelled by its own clean predictions (every example starts
correct, so robust accuracy is informative without data or training) on smooth synthetic images.
The attacks run in a subprocess that compiles normally: under conftest's unoptimised XLA backend
the JAX attacks run ~30x slower. The full-size comparison on trained checkpoints is
benchmarks/agreement.py.
"""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('torchattacks')

from benchmarks import agreement  # noqa: E402
from robust_jax import model_fns  # noqa: E402
from robust_jax import models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 64
SHAPE = (28, 28, 1)
MEAN, STD = (0.2860,), (0.3530,)
SETTINGS = agreement.Settings(eps=0.01, apgd_steps=20, num_targets=3, fab_steps=20,
                              square_queries=200, seed=0)
# Robust accuracies here are about 66% (APGD-CE), 48% (APGD-T, FAB-T) and 88% (Square), so every
# attack flips some examples and leaves others. Both implementations attack the same examples, so
# sampling error cancels: the two can differ only on examples near the threshold, where their
# independent random starts (torch's RNG vs JAX keys) or float rounding decide. Over seeds 0-4 on
# both sides the robust counts differed by at most 1 example of 64 and at most 1 example was
# judged differently (FAB-T with one restart starts at x, draws nothing random, and never
# differed). The bounds allow 3 examples (4.7 points; 1 for FAB-T) and 95% agreement (98%).
MAX_DIFF = {'apgd_ce': 3, 'apgd_t': 3, 'fab_t': 1, 'square': 3}
MIN_AGREE = {'apgd_ce': 0.95, 'apgd_t': 0.95, 'fab_t': 0.98, 'square': 0.95}


def _images(n, seed=0):
  """Smooth images in [0,1]: random 7x7 patterns upsampled 4x, f32[n,28,28,1]."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0.0, 1.0, (n, 7, 7, 1)).astype(np.float32)
  return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)


def _setup():
  """(logits_fn, torch twin, x f32[N,28,28,1], y int32[N] = the model's own predictions)."""
  model = models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=10,
                       mean=MEAN, std=STD)
  params, _, _ = agreement.load_params(model, None, SHAPE, 0, seed=0)
  logits_fn = model_fns.logits_fn(model, params, {})
  net = agreement.torch_ports.port('small_cnn', {'params': params}, SHAPE, MEAN, STD)
  x = _images(N)
  y = np.asarray(logits_fn(x)).argmax(-1).astype(np.int32)
  return logits_fn, net, x, y


def print_comparison():
  """Runs `agreement.compare` on `_setup()` and prints its results as one JSON line."""
  torch.set_num_threads(1)  # 2 threads on 2 shared cores made the small torch batches ~20x slower
  results = agreement.compare(*_setup(), SETTINGS, log=lambda _: None)
  out = {k: {f: (v.tolist() if isinstance(v, np.ndarray) else v) for f, v in r.items()}
         for k, r in results.items()}
  print(json.dumps(dict(results=out, table=agreement.table(results, SETTINGS.eps))))


def test_torch_copy_gives_the_same_logits():
  logits_fn, net, x, _ = _setup()
  noise = np.random.default_rng(1).uniform(0.0, 1.0, x.shape).astype(np.float32)
  for inputs in (x, noise):
    assert agreement.logits_gap(logits_fn, net, inputs) <= agreement.LOGITS_TOL


def test_attacks_agree_with_torchattacks():
  from tests import conftest  # here, not at the top: the subprocess must not import it
  code = 'from tests import test_agreement as t; t.print_comparison()'
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=conftest.SUBPROCESS_ENV,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  results, table = report['results'], report['table']
  assert all(results['clean']['robust_jax']) and all(results['clean']['robust_ref'])
  for name in agreement.ATTACKS:
    r = results[name]
    a, b = np.array(r['robust_jax']), np.array(r['robust_ref'])
    assert 0 < b.sum() < N, f'{name}: uninformative setting\n{table}'
    assert abs(int(a.sum()) - int(b.sum())) <= MAX_DIFF[name], table
    assert np.mean(a == b) >= MIN_AGREE[name], table
    assert not agreement.out_of_ball(r, SETTINGS.eps), table


def test_torch_suites_shipped_at_10_iterations_paper_at_robust_jax_settings():
  """torchattacks 3.5.1's AutoAttack('standard') runs APGD-CE, APGD-T and FAB-T at their classes'
  default of 10 iterations; the 'paper' cascade runs them at Settings' (the AutoAttack paper's
  100 by default), in AutoAttack's order, with the same number of targets."""
  _, net, _, _ = _setup()
  s = agreement.Settings(eps=0.1, apgd_steps=100, num_targets=9, fab_steps=100,
                         square_queries=5000, seed=0)
  shipped = agreement.torch_suite(net, s, 10, 'shipped')
  paper = agreement.torch_suite(net, s, 10, 'paper')
  assert agreement.suite_steps(shipped) == {'APGD': 10, 'APGDT': 10, 'FAB': 10, 'Square': 5000}
  assert agreement.suite_steps(paper) == {'APGD': 100, 'APGDT': 100, 'FAB': 100, 'Square': 5000}
  for suite in (shipped, paper):
    apgd_ce, apgd_t, fab_t, sq = getattr(suite, '_autoattack', suite).attacks
    assert apgd_ce.loss == 'ce' and apgd_t.n_target_classes == fab_t.n_target_classes == 9
    assert fab_t.multi_targeted and sq.p_init == 0.8
