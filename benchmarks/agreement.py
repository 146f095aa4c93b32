r"""Agreement of robust_jax's attacks with an independent PyTorch implementation (torchattacks).

Runs APGD-CE, APGD-T, FAB-T and Square (L-inf) from robust_jax and from torchattacks 3.5.1 (ports
of the authors' AutoAttack code) on the same weights and the same Fashion-MNIST test images, and
prints per attack both robust accuracies, their difference, the per-example agreement and wall
times. torch is a development-only dependency, so this runs in its own venv:

  python3 -m venv .venv-ref && .venv-ref/bin/pip install --no-deps -r requirements-ref.txt
  .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/fmnist_pgd_at --n=1000

Without --checkpoint the model is a random init (--seed).

  .venv-ref/bin/python benchmarks/agreement.py --checkpoint=... --n=500 --suite --rounds=2

--suite instead times the whole standard suite as a cascade: robust_jax's evaluation
(`robust.evaluate` with `eval.suite=standard`, compiles included, attacks in stages on the points
still robust, batch --jax_batch) against torchattacks' AutoAttack (version 'standard'),
interleaved for --rounds rounds, with robust accuracy and per-example agreement.
--jax_path=eval runs robust_jax's single attacks through the same evaluation loop (verdicts
only; times include compiling). The flax `small_cnn` (NHWC) is copied
into an identical torch module (NCHW) and both must give the same logits to 1e-4 on the images.
Settings match AutoAttack's standard version: 1 restart, 100 steps, 9 target classes, Square with
p_init 0.8 and --square_queries queries (5000 in AutoAttack). Robust accuracy is the model's
accuracy on the points each attack returns, evaluated by the model of the same framework; both
frameworks' points are also checked to lie in the eps-ball and in [0,1].
"""

import dataclasses
import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from configs import default  # noqa: E402
from robust_jax import data as data_lib  # noqa: E402
from robust_jax import model_fns  # noqa: E402
from robust_jax import models  # noqa: E402
from robust_jax import parallel  # noqa: E402
from robust_jax.attacks import apgd  # noqa: E402
from robust_jax.attacks import fab  # noqa: E402
from robust_jax.attacks import square  # noqa: E402
from robust_jax.training import checkpoint  # noqa: E402
from robust_jax.training import loop  # noqa: E402
from robust_jax.training import optim  # noqa: E402
from robust_jax.training import state as state_lib  # noqa: E402

# torch is development-only (requirements-ref.txt). Without it this module still imports, so that
# its torch-free parts (Settings, jax_attacks, out_of_ball) serve tests/test_agreement_reference.py.
try:
  import torch
  import torchattacks
  _TorchModule = torch.nn.Module
except ImportError:
  torch = torchattacks = None
  _TorchModule = object

ATTACKS = ('apgd_ce', 'apgd_t', 'fab_t', 'square')
LOGITS_TOL = 1e-4
BALL_TOL = 1e-6  # float32 rounding of x + eps


@dataclasses.dataclass(frozen=True)
class Settings:
  """Matched settings of both implementations (L-inf, one restart each)."""
  eps: float = 0.1
  apgd_steps: int = 100
  num_targets: int = 9
  fab_steps: int = 100
  square_queries: int = 5000
  seed: int = 0


class TorchSmallCNN(_TorchModule):
  """robust_jax's SmallCNN in PyTorch: x f32[B,C,H,W] in [0,1] -> logits f32[B,K]."""

  def __init__(self, in_channels, flat, num_classes, mean, std):
    super().__init__()
    self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
    self.register_buffer('std', torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))
    self.conv1 = torch.nn.Conv2d(in_channels, 16, 4, stride=2, padding=1)
    self.conv2 = torch.nn.Conv2d(16, 32, 4, stride=2, padding=1)
    self.fc1 = torch.nn.Linear(flat, 100)
    self.fc2 = torch.nn.Linear(100, num_classes)

  def forward(self, x):
    x = (x - self.mean) / self.std
    x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
    return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))  # flatten in (C,H,W) order


def torch_small_cnn(params, image_shape, mean, std):
  """Copies flax SmallCNN `params` into a TorchSmallCNN (eval mode).

  Conv kernels go [kh,kw,in,out] -> [out,in,kh,kw]; Dense kernels [in,out] -> [out,in]. flax
  flattens NHWC in (h,w,c) order and torch NCHW in (c,h,w) order, so the rows of the first Dense
  kernel are permuted. flax's explicit padding ((1,1),(1,1)) is torch's symmetric padding=1.
  """
  p = jax.tree.map(np.asarray, params)
  h, w, c = image_shape
  h2, w2 = h // 2 // 2, w // 2 // 2  # two 4x4 stride-2 pad-1 convs: s -> (s - 2) // 2 + 1
  feat = p['Conv_1']['kernel'].shape[-1]
  num_classes = p['logits']['kernel'].shape[-1]
  net = TorchSmallCNN(c, h2 * w2 * feat, num_classes, mean, std)
  dense0 = p['Dense_0']['kernel'].reshape(h2, w2, feat, -1).transpose(3, 2, 0, 1)
  weights = {
      'conv1.weight': p['Conv_0']['kernel'].transpose(3, 2, 0, 1),
      'conv1.bias': p['Conv_0']['bias'],
      'conv2.weight': p['Conv_1']['kernel'].transpose(3, 2, 0, 1),
      'conv2.bias': p['Conv_1']['bias'],
      'fc1.weight': dense0.reshape(dense0.shape[0], -1),
      'fc1.bias': p['Dense_0']['bias'],
      'fc2.weight': p['logits']['kernel'].T,
      'fc2.bias': p['logits']['bias'],
  }
  state = {k: torch.tensor(np.asarray(v, np.float32)) for k, v in weights.items()}
  net.load_state_dict({**net.state_dict(), **state})
  return net.eval()


def _saved_config(path):
  """The config.json of the workdir holding `path` (a workdir, checkpoints/ or a step), or None."""
  path = os.path.abspath(path)
  for d in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
    if os.path.isfile(os.path.join(d, 'config.json')):
      with open(os.path.join(d, 'config.json')) as f:
        return ml_collections.ConfigDict(json.load(f))
  return None


def load_params(model, checkpoint_path, image_shape, num_train, seed=0):
  """(params, batch_stats, description): a random init, or a robust_jax checkpoint's eval params.

  The checkpoint is restored into a template state built from the workdir's config.json (or the
  default config), as `experiment.evaluate_checkpoint` does.
  """
  if not checkpoint_path:
    v = model_fns.init_variables(model, jax.random.key(seed), image_shape)
    return v['params'], v.get('batch_stats', {}), f'random init (seed {seed})'
  cfg = _saved_config(checkpoint_path) or default.get_config()
  tx, _ = optim.make_optimizer(cfg.optim, loop.num_train_steps(cfg, num_train),
                               data_lib.steps_per_epoch(num_train, cfg.train.batch_size))
  template = state_lib.init_state(model, tx, jax.random.key(0), image_shape, cfg.optim.ema_decay)
  state, step = checkpoint.load(checkpoint_path, parallel.replicate(template, parallel.make_mesh()))
  return state.eval_params(), state.batch_stats, f'{checkpoint_path} (step {step})'


def jax_attacks(s, num_classes):
  t = min(s.num_targets, num_classes - 1)
  return {
      'apgd_ce': apgd.make_apgd(norm='linf', eps=s.eps, steps=s.apgd_steps, loss='ce'),
      'apgd_t': apgd.make_apgd_targeted(norm='linf', eps=s.eps, steps=s.apgd_steps,
                                        num_targets=t),
      'fab_t': fab.make_fab_targeted(norm='linf', eps=s.eps, steps=s.fab_steps, num_targets=t),
      'square': square.make_square(norm='linf', eps=s.eps, steps=s.square_queries),
  }


def torch_attacks(net, s, num_classes):
  """torchattacks' counterparts; `n_classes` only sets the number of targets (n_classes - 1)."""
  t = min(s.num_targets, num_classes - 1) + 1
  return {
      'apgd_ce': torchattacks.APGD(net, norm='Linf', eps=s.eps, steps=s.apgd_steps,
                                   n_restarts=1, loss='ce', seed=s.seed),
      'apgd_t': torchattacks.APGDT(net, norm='Linf', eps=s.eps, steps=s.apgd_steps,
                                   n_restarts=1, n_classes=t, seed=s.seed),
      'fab_t': torchattacks.FAB(net, norm='Linf', eps=s.eps, steps=s.fab_steps, n_restarts=1,
                                multi_targeted=True, n_classes=t, seed=s.seed),
      'square': torchattacks.Square(net, norm='Linf', eps=s.eps, n_queries=s.square_queries,
                                    n_restarts=1, p_init=0.8, loss='margin', seed=s.seed),
  }


def _nchw(x):
  return torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))  # a copy: jax arrays are read-only


def _predictors(logits_fn, net):
  jax_logits = jax.jit(logits_fn)

  def torch_logits(x):
    with torch.no_grad():
      return net(_nchw(x)).numpy()
  return (lambda x: np.asarray(jax_logits(x))), torch_logits


def logits_gap(logits_fn, net, x):
  """Largest |logit difference| between the two models on `x: f32[N,H,W,C]`."""
  jax_logits, torch_logits = _predictors(logits_fn, net)
  return float(np.max(np.abs(jax_logits(x) - torch_logits(x))))


def compare(logits_fn, net, x, y, s, names=ATTACKS, log=print):
  """Runs each attack in both frameworks on `x: f32[N,H,W,C]` in [0,1], `y: int32[N]`.

  Returns {name: dict} with per-example `robust_jax` / `robust_ref` (bool[N]), max L-inf
  distances and box violations, the number of returned points on which the two models disagree
  (`cross_flips`) and wall times in seconds (`compile_jax`, `time_jax`, `time_ref`).
  """
  jax_logits, torch_logits = _predictors(logits_fn, net)
  num_classes = jax_logits(x[:1]).shape[-1]
  jax_fns, ref_fns = jax_attacks(s, num_classes), torch_attacks(net, s, num_classes)
  key = jax.random.key(s.seed)
  x_t, y_t = _nchw(x), torch.from_numpy(y.astype(np.int64))
  out = {'clean': dict(robust_jax=jax_logits(x).argmax(-1) == y,
                       robust_ref=torch_logits(x).argmax(-1) == y)}
  for name in names:
    fn = jax.jit(lambda xx, yy, kk, attack=jax_fns[name]: attack(logits_fn, xx, yy, kk))
    t0 = time.perf_counter()
    compiled = fn.lower(x, y, key).compile()
    t1 = time.perf_counter()
    x_jax = np.asarray(jax.block_until_ready(compiled(x, y, key)))
    t2 = time.perf_counter()
    x_ref = ref_fns[name](x_t, y_t).detach().numpy().transpose(0, 2, 3, 1)
    t3 = time.perf_counter()
    r = dict(compile_jax=t1 - t0, time_jax=t2 - t1, time_ref=t3 - t2)
    for tag, xa, own, other in (('jax', x_jax, jax_logits, torch_logits),
                                ('ref', x_ref, torch_logits, jax_logits)):
      pred = own(xa).argmax(-1)
      r[f'robust_{tag}'] = pred == y
      r[f'flips_{tag}'] = int(np.sum(other(xa).argmax(-1) != pred))
      r[f'dist_{tag}'] = float(np.max(np.abs(xa - x)))
      r[f'box_{tag}'] = float(max(0.0, -xa.min(), xa.max() - 1.0))
    out[name] = r
    log(f'{name}: robust_jax {r["robust_jax"].mean():.2%} in {r["time_jax"]:.1f} s '
        f'(+{r["compile_jax"]:.1f} s compile), reference {r["robust_ref"].mean():.2%} in '
        f'{r["time_ref"]:.1f} s')
  done = [out[k] for k in names]
  if done:
    out['worst'] = dict(robust_jax=np.all([r['robust_jax'] for r in done], 0),
                        robust_ref=np.all([r['robust_ref'] for r in done], 0))
  return out


def _eval_setup(model, params, dataset, n, s, batch_size):
  """(config, phase) for robust_jax's evaluation of the first n test images: the standard suite
  at radius s.eps, and `robust._phase_runner`'s phase(cfg, subset, key, name)."""
  from robust_jax.eval import robust  # pylint: disable=g-import-not-at-top
  from robust_jax.eval import target  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.seed = s.seed
  config.eval.update(num_examples=n, batch_size=batch_size, suite='standard', suite_norm='linf',
                     suite_eps=s.eps, sanity_checks=False)
  config.eval.attacks = {}
  phase = robust._phase_runner(target.of_flax(model, params, {}),  # pylint: disable=protected-access
                               dataset.test_images[:n], dataset.test_labels[:n],
                               parallel.make_mesh(), batch_size, None, None)
  return config, phase


def eval_path(model, params, dataset, n, s, batch_size, name):
  """robust_jax's attack `name` on the first n images through the evaluation loop (stages,
  buckets): (robust bool[n], any point outside its ball, seconds with compiling)."""
  from robust_jax import suites  # pylint: disable=g-import-not-at-top
  _, phase = _eval_setup(model, params, dataset, n, s, batch_size)
  cfg = dict(suites.attacks('standard', norm='linf', eps=s.eps))[name]
  cfg.update(steps={'fab_t': s.fab_steps, 'square': s.square_queries}.get(name, s.apgd_steps))
  if 'num_targets' in cfg:
    cfg['num_targets'] = s.num_targets
  t0 = time.perf_counter()
  correct, outside = phase(cfg, np.arange(n), jax.random.key(s.seed), name)
  return correct, bool(outside.any()), time.perf_counter() - t0


def compare_suite(model, params, net, dataset, n, s, batch_size, rounds, log=print):
  """The standard suite, robust_jax's evaluation vs torchattacks' AutoAttack, `rounds` times
  interleaved: {'jax': [seconds], 'ref': [seconds], 'robust_jax', 'robust_ref': bool[n]}."""
  from robust_jax.eval import robust  # pylint: disable=g-import-not-at-top
  config, _ = _eval_setup(model, params, dataset, n, s, batch_size)
  x = dataset.test_images[:n].astype(np.float32) / 255.0
  y = dataset.test_labels[:n].astype(np.int32)
  out = {'jax': [], 'ref': [], 'cascade_jax': []}
  for r in range(rounds):
    t0 = time.perf_counter()
    res, art = robust.evaluate(model, params, {}, dataset, config, parallel.make_mesh(),
                               progress=False)
    out['jax'].append(time.perf_counter() - t0)
    out['robust_jax'] = art['per_example']['suite']
    out['cascade_jax'].append([(a['name'], a['attacked'], a['broken'], round(a['seconds'], 1))
                               for a in res['suite']['attacks']])
    log(f'round {r}: robust_jax standard suite {out["robust_jax"].mean():.2%} in '
        f'{out["jax"][-1]:.1f} s (compiles included): {out["cascade_jax"][-1]}')
    aa = torchattacks.AutoAttack(net, norm='Linf', eps=s.eps, version='standard',
                                 n_classes=dataset.num_classes, seed=s.seed)
    t0 = time.perf_counter()
    x_ref = aa(_nchw(x), torch.from_numpy(y.astype(np.int64))).detach()
    out['ref'].append(time.perf_counter() - t0)
    with torch.no_grad():
      out['robust_ref'] = net(x_ref).argmax(-1).numpy() == y
    log(f'round {r}: torchattacks AutoAttack {out["robust_ref"].mean():.2%} in '
        f'{out["ref"][-1]:.1f} s; ratio {out["ref"][-1] / out["jax"][-1]:.2f}x')
  return out


def compare_eval_path(model, params, net, dataset, x, y, s, log=print):
  """Each of --attacks: robust_jax through its evaluation loop vs the torchattacks attack on all
  n images, interleaved; logs robust accuracies, agreement and times (robust_jax's: compiles
  included)."""
  ref_fns = torch_attacks(net, s, dataset.num_classes)
  rows = {}
  for name in _ATTACKS.value:
    ok, outside, t_jax = eval_path(model, params, dataset, len(y), s, _JAX_BATCH.value, name)
    t0 = time.perf_counter()
    x_ref = ref_fns[name](_nchw(x), torch.from_numpy(y.astype(np.int64))).detach().numpy()
    t_ref = time.perf_counter() - t0
    with torch.no_grad():
      ref_ok = net(torch.from_numpy(x_ref)).numpy().argmax(-1) == y
    rows[name] = dict(robust_jax=float(ok.mean()), robust_ref=float(ref_ok.mean()),
                      agreement=float(np.mean(ok == ref_ok)), seconds_jax=t_jax,
                      seconds_ref=t_ref, outside_jax=outside)
    log(f'{name}: robust_jax (evaluation loop) {ok.mean():.2%} in {t_jax:.1f} s with compiles, '
        f'reference {ref_ok.mean():.2%} in {t_ref:.1f} s; agreement {np.mean(ok == ref_ok):.1%};'
        f' speed-up {t_ref / t_jax:.2f}x' + (' OUT OF BALL' if outside else ''))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(rows, f, indent=1)


def out_of_ball(r, eps):
  """Which frameworks' points leave the eps-ball or [0,1] (empty list when none do)."""
  return [t for t in ('jax', 'ref') if r[f'dist_{t}'] > eps + BALL_TOL or r[f'box_{t}'] > 0]


def table(results, eps):
  """A Markdown table of `compare`'s results."""
  lines = ['| attack | robust_jax (%) | reference (%) | difference (points) | '
           'per-example agreement (%) | time robust_jax (s) | time reference (s) | '
           'max ‖δ‖∞ robust_jax / reference |',
           '|---|---:|---:|---:|---:|---:|---:|---|']
  for name, r in results.items():
    a, b = r['robust_jax'], r['robust_ref']
    row = [name, f'{100 * a.mean():.1f}', f'{100 * b.mean():.1f}',
           f'{100 * (a.mean() - b.mean()):+.1f}', f'{100 * np.mean(a == b):.1f}']
    if 'time_jax' in r:
      bad = out_of_ball(r, eps)
      row += [f'{r["time_jax"]:.1f} (+{r["compile_jax"]:.1f} compile)', f'{r["time_ref"]:.1f}',
              f'{r["dist_jax"]:.4f} / {r["dist_ref"]:.4f}'
              + (f' OUT OF BALL: {", ".join(bad)}' if bad else '')]
    else:
      row += ['-', '-', '-']
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


_MODEL = flags.DEFINE_enum('model', 'small_cnn', ['small_cnn'], 'Model (needs a torch twin).')
_N = flags.DEFINE_integer('n', 500, 'First n Fashion-MNIST test images.')
_EPS = flags.DEFINE_float('eps', 0.1, 'L-inf radius in [0,1] pixel scale.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'A robust_jax workdir or checkpoint folder '
                                  '(default: random init).')
_ATTACKS = flags.DEFINE_list('attacks', list(ATTACKS), f'Subset of {ATTACKS}.')
_APGD_STEPS = flags.DEFINE_integer('apgd_steps', 100, 'APGD-CE and APGD-T iterations.')
_NUM_TARGETS = flags.DEFINE_integer('num_targets', 9, 'APGD-T and FAB-T target classes.')
_FAB_STEPS = flags.DEFINE_integer('fab_steps', 100, 'FAB-T iterations per target.')
_SQUARE_QUERIES = flags.DEFINE_integer('square_queries', 5000, 'Square iterations (queries).')
_SEED = flags.DEFINE_integer('seed', 0, 'JAX key, torch seed and random-init seed.')
_SUITE = flags.DEFINE_bool('suite', False, 'Time the standard suite as a cascade (robust_jax '
                           "evaluation vs torchattacks' AutoAttack) instead of single attacks.")
_ROUNDS = flags.DEFINE_integer('rounds', 1, '--suite: interleaved rounds.')
_JAX_PATH = flags.DEFINE_enum('jax_path', 'attack', ['attack', 'eval'], "robust_jax's single "
                              'attacks as one jitted call on all n (attack) or through the '
                              'evaluation loop, in stages (eval).')
_JAX_BATCH = flags.DEFINE_integer('jax_batch', 500, 'Batch size of robust_jax\'s evaluation.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results here (JSON).')
_TORCH_THREADS = flags.DEFINE_integer(
    'torch_threads', 1, 'torch intra-op threads (on 2 shared cores, 2 threads ran the small '
    'batches of the reference attacks up to 20x slower than 1).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  bad = sorted(set(_ATTACKS.value) - set(ATTACKS))
  if bad:
    raise app.UsageError(f'Unknown attacks {bad}; valid: {list(ATTACKS)}.')
  s = Settings(eps=_EPS.value, apgd_steps=_APGD_STEPS.value, num_targets=_NUM_TARGETS.value,
               fab_steps=_FAB_STEPS.value, square_queries=_SQUARE_QUERIES.value, seed=_SEED.value)
  torch.set_num_threads(_TORCH_THREADS.value)
  dataset = data_lib.load(default.get_config().data)
  model = models.build(ml_collections.ConfigDict(dict(name=_MODEL.value)),
                       num_classes=dataset.num_classes, mean=dataset.mean, std=dataset.std)
  image_shape = dataset.test_images.shape[1:]
  params, _, source = load_params(model, _CHECKPOINT.value, image_shape,
                                  len(dataset.train_labels), _SEED.value)
  net = torch_small_cnn(params, image_shape, dataset.mean, dataset.std)
  x = dataset.test_images[:_N.value].astype(np.float32) / 255.0
  y = dataset.test_labels[:_N.value].astype(np.int32)
  logits_fn = model_fns.logits_fn(model, params, {})
  gap = logits_gap(logits_fn, net, x)
  print(f'{_MODEL.value} from {source}; {len(y)} {dataset.name} test images; {s}')
  print(f'jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} '
        f'({torch.get_num_threads()} threads), torchattacks {torchattacks.__version__}')
  print(f'max |logits_jax - logits_torch| = {gap:.2e} (tolerance {LOGITS_TOL:g})', flush=True)
  if not gap <= LOGITS_TOL:
    raise SystemExit(f'The torch copy of the model differs: logit gap {gap:.2e}.')
  log = lambda m: print(m, flush=True)  # noqa: E731
  if _SUITE.value:
    out = compare_suite(model, params, net, dataset, len(y), s, _JAX_BATCH.value, _ROUNDS.value,
                        log)
    agree = float(np.mean(out['robust_jax'] == out['robust_ref']))
    ratio = float(np.median(np.array(out['ref']) / np.array(out['jax'])))
    log(f'\nstandard suite: robust_jax {out["robust_jax"].mean():.2%} vs AutoAttack '
        f'{out["robust_ref"].mean():.2%}, per-example agreement {agree:.1%}; seconds robust_jax '
        f'{out["jax"]}, torchattacks {out["ref"]}; median speed-up {ratio:.2f}x')
    if _JSON.value:
      with open(_JSON.value, 'w') as f:
        json.dump({'seconds_jax': out['jax'], 'seconds_ref': out['ref'],
                   'cascade_jax': out['cascade_jax'], 'speedup_median': ratio,
                   'robust_jax': float(out['robust_jax'].mean()),
                   'robust_ref': float(out['robust_ref'].mean()), 'agreement': agree,
                   'n': int(len(y)), 'jax_batch': _JAX_BATCH.value, 'source': source}, f, indent=1)
    return
  if _JAX_PATH.value == 'eval':
    compare_eval_path(model, params, net, dataset, x, y, s, log)
    return
  results = compare(logits_fn, net, x, y, s, _ATTACKS.value, log=log)
  print('\n' + table(results, s.eps))
  flips = {k: (r['flips_jax'], r['flips_ref']) for k, r in results.items() if 'flips_jax' in r}
  print(f'\nreturned points classified differently by the two models (robust_jax\'s, '
        f'reference\'s): {flips}')
  if any(out_of_ball(r, s.eps) for r in results.values() if 'dist_jax' in r):
    raise SystemExit('Some adversarial examples leave the eps-ball or [0,1].')


if __name__ == '__main__':
  app.run(main)
