r"""Writes tests/fixtures/agreement_reference.json: torchattacks' results on a small fixed model.

tests/test_agreement.py compares robust_jax's attacks with torchattacks' live, so it needs torch
and is skipped wherever torch is absent (in .venv, hence in CI). This script runs torchattacks
3.5.1's APGD-CE, APGD-T, FAB-T and Square (L-inf) in .venv-ref under torch seeds 0-4 on a
small_cnn with fixed weights and fixed synthetic images, and writes which examples each run left
correctly classified (Square's random search decides a few examples differently per seed); in CI,
tests/test_agreement_reference.py runs robust_jax's attacks on the same model and images and
compares. Regenerate (after a change of the settings below, of the model or of torchattacks) with

  python3 -m venv .venv-ref && .venv-ref/bin/pip install --no-deps -r requirements-ref.txt
  .venv-ref/bin/python benchmarks/make_agreement_reference.py

The weights and images are drawn from numpy's legacy `RandomState`, whose streams numpy keeps
fixed across versions, so they do not depend on JAX's PRNG or on robust_jax's init code (a JAX
upgrade that changes random bits leaves the fixture valid); the fixture records their SHA-256
digests and the torch model's clean logits, and the test checks both before comparing. The weights
follow small_cnn's init (He normal fan_out for convs, He normal fan_in for the hidden Dense, LeCun
normal for the classifier, zero biases); the labels are the model's own clean predictions, so
every example starts correct and robust accuracy is informative without data or training. (The
model is not tests/test_agreement.py's, which is flax's init under jax.random.key(0).)

Without torch, this module still imports: the test uses `setup`, `load` and `jax_results`.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import agreement  # noqa: E402
from robust_jax import model_fns  # noqa: E402
from robust_jax import models  # noqa: E402

FIXTURE = os.path.join(_ROOT, 'tests', 'fixtures', 'agreement_reference.json')
COMMAND = '.venv-ref/bin/python benchmarks/make_agreement_reference.py'
N = 64
SHAPE = (28, 28, 1)
MEAN, STD = (0.2860,), (0.3530,)
WEIGHTS_SEED = 0
IMAGES_SEED = 0
# tests/test_agreement.py's settings but eps and Square's queries, for this model's smaller logit
# margins: robust accuracies are about 48% (APGD-CE), 34% (APGD-T, FAB-T) and 67% (Square).
SETTINGS = agreement.Settings(eps=0.004, apgd_steps=20, num_targets=3, fab_steps=20,
                              square_queries=500, seed=0)


def _model():
  return models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=10,
                      mean=MEAN, std=STD)


def _std(layer, shape):
  """small_cnn's init scale of a kernel of `shape` in the layer named `layer`."""
  if layer.startswith('Conv_'):  # He normal, fan_out = kh * kw * out
    return np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
  if layer == 'logits':  # LeCun normal, fan_in
    return np.sqrt(1.0 / shape[0])
  return np.sqrt(2.0 / shape[0])  # hidden Dense: He normal, fan_in


def params(model, seed=WEIGHTS_SEED):
  """small_cnn's params {layer: {'kernel', 'bias'}}, f32, drawn from RandomState(seed).

  Only the shapes come from the model; layers are drawn in sorted order of their names.
  """
  shapes = jax.eval_shape(lambda: model_fns.init_variables(model, jax.random.key(0), SHAPE))
  rng = np.random.RandomState(seed)
  out = {}
  for layer in sorted(shapes['params']):
    shape = shapes['params'][layer]['kernel'].shape
    kernel = rng.standard_normal(shape) * _std(layer, shape)
    out[layer] = {'kernel': kernel.astype(np.float32),
                  'bias': np.zeros(shapes['params'][layer]['bias'].shape, np.float32)}
  return out


def images(n=N, seed=IMAGES_SEED):
  """Smooth images in [0,1]: random 7x7 patterns upsampled 4x, f32[n,28,28,1]."""
  coarse = np.random.RandomState(seed).uniform(0.0, 1.0, (n, 7, 7, 1)).astype(np.float32)
  return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)


def digest(tree):
  """SHA-256 of the float32 arrays of a nested dict (names, shapes and values)."""
  h = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(tree),
                           key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.ascontiguousarray(leaf, dtype='<f4')
    h.update(f'{jax.tree_util.keystr(path)}{a.shape}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def setup():
  """(logits_fn, params, x f32[N,28,28,1]) of the fixed model and images."""
  model = _model()
  p = params(model)
  return model_fns.logits_fn(model, p, {}), p, images()


def load(path=FIXTURE):
  with open(path) as f:
    return json.load(f)


def settings_of(fixture):
  return agreement.Settings(**fixture['settings'])


def _bits(mask):
  return ''.join('1' if b else '0' for b in np.asarray(mask))


def jax_results(logits_fn, x, y, s, names=agreement.ATTACKS):
  """robust_jax's attacks on (x, y) with key `s.seed`: {name: {robust, dist, box, time_s}}.

  `robust` is the per-example correctness as a string of 0/1; dist the largest L-inf distance of
  a returned point from its x, box its largest step outside [0,1].
  """
  fns = agreement.jax_attacks(s, num_classes=10)
  predict = jax.jit(logits_fn)
  key = jax.random.key(s.seed)
  out = {}
  for name in names:
    fn = jax.jit(lambda xx, yy, kk, attack=fns[name]: attack(logits_fn, xx, yy, kk))
    t0 = time.perf_counter()
    x_adv = np.asarray(jax.block_until_ready(fn(x, y, key)))
    out[name] = dict(robust=_bits(np.asarray(predict(x_adv)).argmax(-1) == y),
                     dist=float(np.max(np.abs(x_adv - x))),
                     box=float(max(0.0, -x_adv.min(), x_adv.max() - 1.0)),
                     time_s=round(time.perf_counter() - t0, 2))
  return out


def print_jax_results():
  """Prints `jax_results` on the fixture's model, images and settings as one JSON line."""
  fixture = load()
  logits_fn, _, x = setup()
  y = np.asarray(fixture['labels'], np.int32)
  print(json.dumps(jax_results(logits_fn, x, y, settings_of(fixture))))


def _torch_results(net, x, y, s):
  """torchattacks' counterparts of `jax_results` (the torch model judges its own points)."""
  torch = agreement.torch
  fns = agreement.torch_attacks(net, s, num_classes=10)
  x_t = torch.tensor(x.transpose(0, 3, 1, 2))
  y_t = torch.from_numpy(y.astype(np.int64))
  out = {}
  for name, attack in fns.items():
    t0 = time.perf_counter()
    x_adv = attack(x_t, y_t).detach()
    with torch.no_grad():
      pred = net(x_adv).numpy().argmax(-1)
    x_adv = x_adv.numpy().transpose(0, 2, 3, 1)
    out[name] = dict(robust=_bits(pred == y), dist=float(np.max(np.abs(x_adv - x))),
                     box=float(max(0.0, -x_adv.min(), x_adv.max() - 1.0)),
                     time_s=round(time.perf_counter() - t0, 2))
    print(f'{name} (seed {s.seed}): reference robust {out[name]["robust"].count("1")}/{len(y)} '
          f'in {out[name]["time_s"]:.1f} s', flush=True)
  return out


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=FIXTURE)
  parser.add_argument('--seeds', default='0,1,2,3,4', help='torch seeds of the reference runs')
  args = parser.parse_args(argv)
  torch, torchattacks = agreement.torch, agreement.torchattacks
  if torch is None:
    raise SystemExit(f'needs torch and torchattacks: run it as {COMMAND}')
  torch.set_num_threads(1)  # 2 threads on 2 shared cores made the small torch batches ~20x slower
  logits_fn, p, x = setup()
  net = agreement.torch_ports.port('small_cnn', {'params': p}, SHAPE, MEAN, STD)
  with torch.no_grad():
    logits = net(torch.tensor(x.transpose(0, 3, 1, 2))).numpy()
  gap = float(np.max(np.abs(np.asarray(jax.jit(logits_fn)(x)) - logits)))
  if not gap <= agreement.LOGITS_TOL:
    raise SystemExit(f'The torch copy of the model differs: logit gap {gap:.2e}.')
  y = logits.argmax(-1).astype(np.int32)
  seeds = [int(v) for v in args.seeds.split(',')]
  runs = [_torch_results(net, x, y, dataclasses.replace(SETTINGS, seed=seed)) for seed in seeds]
  reference = {name: dict(robust=[r[name]['robust'] for r in runs],
                          dist=max(r[name]['dist'] for r in runs),
                          box=max(r[name]['box'] for r in runs),
                          time_s=[r[name]['time_s'] for r in runs])
               for name in agreement.ATTACKS}
  bad = [n for n, r in reference.items()
         if r['dist'] > SETTINGS.eps + agreement.BALL_TOL or r['box'] > 0]
  if bad:
    raise SystemExit(f'torchattacks\' points leave the eps-ball or [0,1]: {bad}')
  fixture = dict(
      about=f'torchattacks\' results on a fixed small_cnn; written by {COMMAND} (see its '
      'docstring), read by tests/test_agreement_reference.py. Do not edit by hand.',
      versions=dict(torch=torch.__version__, torchattacks=torchattacks.__version__,
                    numpy=np.__version__, jax=jax.__version__, python=platform.python_version()),
      model=dict(name='small_cnn', image_shape=list(SHAPE), mean=list(MEAN), std=list(STD),
                 weights='numpy RandomState(weights_seed), small_cnn init scales',
                 weights_seed=WEIGHTS_SEED, weights_sha256=digest(p), torch_logits_gap=gap),
      data=dict(n=N, images='numpy RandomState(images_seed) 7x7 uniform, upsampled 4x',
                images_seed=IMAGES_SEED, images_sha256=digest({'x': x})),
      settings=dataclasses.asdict(SETTINGS),
      labels=y.tolist(),
      logits=[[round(float(v), 6) for v in row] for row in logits],
      seeds=seeds,
      reference=reference,
  )
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  text = json.dumps(fixture, indent=1)  # then one line per list of numbers:
  text = re.sub(r'\[[-0-9.e,\s]+\]', lambda m: ' '.join(m.group().split()), text)
  with open(args.out, 'w') as f:
    f.write(text + '\n')
  print(f'wrote {args.out} ({os.path.getsize(args.out)} bytes)')


if __name__ == '__main__':
  main(sys.argv[1:])
