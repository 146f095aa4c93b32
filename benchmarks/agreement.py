r"""Agreement of robust_jax's attacks with an independent PyTorch implementation (torchattacks).

Runs APGD-CE, APGD-T, FAB-T and Square (L-inf) from robust_jax and from torchattacks 3.5.1 (ports
of the authors' AutoAttack code) on the same weights and the same test images, and prints per
attack both robust accuracies, their difference, the per-example agreement and wall times. torch
is a development-only dependency, so this runs in its own venv, from the repository's root:

  python3 -m venv .venv-ref && .venv-ref/bin/pip install --no-deps -r requirements-ref.txt
  .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/fmnist_pgd_at --n=1000

The model is a flax `small_cnn` on Fashion-MNIST (a robust_jax workdir, or without --checkpoint a
random init, --seed), copied into its torch port (benchmarks/torch_ports.py), or a PyTorch file of
a published layout (preact_resnet18, wide_resnet, dm_wide_resnet; e.g. written by
`launch.py --mode=export`) on CIFAR-10 or Fashion-MNIST:

  python launch.py --mode=export --checkpoint=workdirs/cifar_run --export_path=cifar_run.pt \
    --config.data.name=cifar10 --config.model.name=preact_resnet18 --config.model.base_width=8
  .venv-ref/bin/python benchmarks/agreement.py --torch_checkpoint=cifar_run.pt --data=cifar10 \
    --model=preact_resnet18 --base_width=8 --n=1000
  .venv-ref/bin/python benchmarks/agreement.py --torch_checkpoint=cifar_run.pt --data=cifar10 \
    --model=preact_resnet18 --base_width=8 --n=500 --suite --rounds=2

There torch reads the file into the layout's torch module (benchmarks/torch_layouts.py, strict)
and JAX through robust_jax.interop.torch_models.torch_logits_fn; --normalize (default true, as
robust_jax's exports) puts the dataset's mean/std normalisation in front of both. Either way both
models must give the same logits to 1e-4 on the images before any attack runs. eps defaults to
0.1 on Fashion-MNIST and 8/255 on CIFAR-10.

--suite instead times the whole standard suite as a cascade: robust_jax's evaluation
(`robust_jax.evaluate` with suite='standard', compiles included, attacks in stages on the points
still robust, batch --jax_batch) against torchattacks' AutoAttack (version 'standard'),
interleaved for --rounds rounds, with robust accuracy and per-example agreement. torchattacks
3.5.1's `AutoAttack(version='standard')` leaves APGD-CE, APGD-T and FAB-T at their classes' default
of 10 iterations, a tenth of the AutoAttack paper's 100; --torch_suites times it as shipped and
as the same cascade at the paper's settings (`torch_suite`).
--jax_path=eval runs robust_jax's single attacks through the same evaluation loop (verdicts
only; times include compiling). Settings match AutoAttack's standard version: 1 restart, 100
steps, 9 target classes, Square with p_init 0.8 and --square_queries queries (5000 in
AutoAttack). Robust accuracy is the model's accuracy on the points each attack returns, evaluated
by the model of the same framework; both frameworks' points are also checked to lie in the
eps-ball and in [0,1].
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

import robust_jax  # noqa: E402
from configs import default  # noqa: E402
from robust_jax import compile_cache  # noqa: E402
from robust_jax import data as data_lib  # noqa: E402
from robust_jax import experiment  # noqa: E402
from robust_jax import model_fns  # noqa: E402
from robust_jax import models  # noqa: E402
from robust_jax import parallel  # noqa: E402
from robust_jax.attacks import apgd  # noqa: E402
from robust_jax.attacks import fab  # noqa: E402
from robust_jax.attacks import square  # noqa: E402
from robust_jax.interop import torch_files  # noqa: E402
from robust_jax.interop import torch_models  # noqa: E402

# torch is development-only (requirements-ref.txt). Without it this module still imports, so that
# its torch-free parts (Settings, jax_attacks, out_of_ball) serve tests/test_agreement_reference.py.
try:
  import torch
  import torchattacks

  from benchmarks import torch_layouts
  from benchmarks import torch_ports
except ImportError:
  torch = torchattacks = torch_layouts = torch_ports = None

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

  The checkpoint is restored by `experiment.restore` (as --mode=eval restores it) into the state
  of the workdir's config.json (or the default config).
  """
  if not checkpoint_path:
    v = model_fns.init_variables(model, jax.random.key(seed), image_shape)
    return v['params'], v.get('batch_stats', {}), f'random init (seed {seed})'
  cfg = _saved_config(checkpoint_path) or default.get_config()
  state, step = experiment.restore(cfg, checkpoint_path, model, image_shape, num_train,
                                   parallel.make_mesh())
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


_device = 'cpu'  # torch's device: main() sets it from --torch_device


def _nchw(x):
  """A contiguous NCHW copy (jax arrays are read-only; torchattacks' FAB views its gradients,
  which take the input's strides, as contiguous)."""
  return torch.tensor(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)),
                      device=_device)


def _numpy(t):
  """A torch tensor's values as numpy, from whichever device it is on."""
  return t.detach().cpu().numpy()


def _sync():
  """Waits for the GPU's queued work, so that a torch timing covers it."""
  if _device.startswith('cuda'):
    torch.cuda.synchronize()


def _predictors(logits_fn, net):
  jax_logits = jax.jit(logits_fn)

  def torch_logits(x):
    with torch.no_grad():
      return _numpy(net(_nchw(x)))
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
  x_t, y_t = _nchw(x), _labels(y)
  out = {'clean': dict(robust_jax=jax_logits(x).argmax(-1) == y,
                       robust_ref=torch_logits(x).argmax(-1) == y)}
  for name in names:
    fn = jax.jit(lambda xx, yy, kk, attack=jax_fns[name]: attack(logits_fn, xx, yy, kk))
    t0 = time.perf_counter()
    compiled = fn.lower(x, y, key).compile()
    t1 = time.perf_counter()
    x_jax = np.asarray(jax.block_until_ready(compiled(x, y, key)))
    t2 = time.perf_counter()
    x_ref = ref_fns[name](x_t, y_t)
    _sync()
    t3 = time.perf_counter()
    x_ref = _numpy(x_ref).transpose(0, 2, 3, 1)
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


def eval_path(logits_fn, x, y, s, batch_size, name):
  """robust_jax's attack `name` on (x, y) through the evaluation loop (stages, buckets):
  (robust bool[n], any point outside its ball, seconds with compiling)."""
  from robust_jax import suites  # pylint: disable=g-import-not-at-top
  from robust_jax.eval import robust  # pylint: disable=g-import-not-at-top
  from robust_jax.eval import target  # pylint: disable=g-import-not-at-top
  phase = robust._phase_runner(target.of_function(logits_fn), x, y,  # pylint: disable=protected-access
                               parallel.make_mesh(), batch_size, None, None)
  cfg = dict(suites.attacks('standard', norm='linf', eps=s.eps))[name]
  cfg.update(steps={'fab_t': s.fab_steps, 'square': s.square_queries}.get(name, s.apgd_steps))
  if 'num_targets' in cfg:
    cfg['num_targets'] = s.num_targets
  t0 = time.perf_counter()
  correct, outside = phase(cfg, np.arange(len(y)), jax.random.key(s.seed), name)
  return correct, bool(outside.any()), time.perf_counter() - t0


TORCH_SUITES = ('shipped', 'paper')


def torch_suite(net, s, num_classes, which):
  """torchattacks' standard AutoAttack: `which='shipped'` is `AutoAttack(version='standard')` as
  torchattacks 3.5.1 builds it, whose APGD-CE, APGD-T and FAB-T keep their classes' default of 10
  iterations; `'paper'` is the same cascade (`MultiAttack`) at Croce & Hein 2020's settings, the
  ones robust_jax's suite runs: 100 iterations each (`s`), 9 targets, Square 5,000 queries."""
  if which == 'shipped':
    return torchattacks.AutoAttack(net, norm='Linf', eps=s.eps, version='standard',
                                   n_classes=num_classes, seed=s.seed)
  return torchattacks.MultiAttack(list(torch_attacks(net, s, num_classes).values()))


def _suite_attacks(attack):
  """The attacks of a `torch_suite`, in cascade order (AutoAttack wraps a MultiAttack)."""
  return getattr(attack, '_autoattack', attack).attacks


def time_suite_attacks(attack):
  """Wraps each attack of a `torch_suite` so that it records [(name, rows attacked, seconds)] in
  the returned list as the cascade runs (torch's counterpart of robust_jax's cascade record)."""
  record = []
  for a in _suite_attacks(attack):
    def timed(images, labels, *args, _a=a, _forward=a.forward, **kwargs):
      t0 = time.perf_counter()
      out = _forward(images, labels, *args, **kwargs)
      _sync()
      record.append((type(_a).__name__, int(images.shape[0]), round(time.perf_counter() - t0, 1)))
      return out
    a.forward = timed
  return record


def suite_steps(attack):
  """{attack class: its iterations} of a `torch_suite`, read from the objects themselves."""
  return {type(a).__name__: getattr(a, 'steps', getattr(a, 'n_queries', None))
          for a in _suite_attacks(attack)}


def compare_suite(logits_fn, net, x, y, s, batch_size, rounds, log=print,
                  torch_suites=TORCH_SUITES):
  """The standard suite, robust_jax's evaluation (`robust_jax.evaluate`) vs torchattacks'
  AutoAttack (each of `torch_suites`, see `torch_suite`) on `x: f32[N,H,W,C]`, `y: int32[N]`,
  `rounds` times interleaved: {'jax': [seconds], 'cascade_jax', 'robust_jax': bool[N], and per
  torch suite w: 'ref_w': [seconds], 'robust_ref_w': bool[N], 'steps_ref_w', 'cascade_ref_w'}."""
  out = {'jax': [], 'cascade_jax': [], **{f'{k}_{w}': [] for w in torch_suites
                                            for k in ('ref', 'cascade_ref')}}
  num_classes = _num_classes(net, x)
  for r in range(rounds):
    t0 = time.perf_counter()
    res = robust_jax.evaluate(logits_fn, x, y, norm='Linf', eps=s.eps, suite='standard',
                              batch_size=batch_size, sanity_checks=False, seed=s.seed,
                              verbose=False)
    out['jax'].append(time.perf_counter() - t0)
    out['robust_jax'] = res['per_example']['suite']
    out['cascade_jax'].append([(a['name'], a['attacked'], a['broken'], round(a['seconds'], 1))
                               for a in res['suite']['attacks']])
    cache = compile_cache.in_use()
    log(f'round {r}: robust_jax standard suite {out["robust_jax"].mean():.2%} in '
        f'{out["jax"][-1]:.1f} s (compiles included'
        + (f'; persistent compilation cache {cache}: programs of earlier rounds or runs are '
           'read back' if cache else '') + f'): {out["cascade_jax"][-1]}')
    for w in torch_suites:
      aa = torch_suite(net, s, num_classes, w)
      out[f'steps_ref_{w}'] = suite_steps(aa)
      cascade = time_suite_attacks(aa)
      t0 = time.perf_counter()
      x_ref = aa(_nchw(x), _labels(y)).detach()
      _sync()
      out[f'ref_{w}'].append(time.perf_counter() - t0)
      with torch.no_grad():
        out[f'robust_ref_{w}'] = _numpy(net(x_ref).argmax(-1)) == y
      out[f'cascade_ref_{w}'].append(cascade)
      log(f'round {r}: torchattacks AutoAttack ({w}: {out[f"steps_ref_{w}"]}) '
          f'{out[f"robust_ref_{w}"].mean():.2%} in {out[f"ref_{w}"][-1]:.1f} s; ratio '
          f'{out[f"ref_{w}"][-1] / out["jax"][-1]:.2f}x; (attack, rows, seconds): {cascade}')
  return out


def _set_tf32(on):
  """TF32 (JAX's GPU default precision, torch's TF32) or full float32 in both frameworks."""
  jax.config.update('jax_default_matmul_precision', None if on else 'highest')
  torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on


def _labels(y):
  return torch.from_numpy(y.astype(np.int64)).to(_device)


def _num_classes(net, x):
  with torch.no_grad():
    return int(net(_nchw(x[:1])).shape[-1])


def compare_eval_path(logits_fn, net, x, y, s, log=print):
  """Each of --attacks: robust_jax through its evaluation loop vs the torchattacks attack on all
  n images, interleaved; logs robust accuracies, agreement and times (robust_jax's: compiles
  included)."""
  ref_fns = torch_attacks(net, s, _num_classes(net, x))
  rows = {}
  for name in _ATTACKS.value:
    ok, outside, t_jax = eval_path(logits_fn, x, y, s, _JAX_BATCH.value, name)
    t0 = time.perf_counter()
    x_ref = ref_fns[name](_nchw(x), _labels(y)).detach()
    _sync()
    t_ref = time.perf_counter() - t0
    with torch.no_grad():
      ref_ok = _numpy(net(x_ref)).argmax(-1) == y
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


MODELS = ('small_cnn', 'preact_resnet18', 'wide_resnet', 'dm_wide_resnet')
DATA = {'fashion_mnist': 0.1, 'cifar10': 8 / 255}  # dataset: default eps
_MODEL = flags.DEFINE_enum('model', 'small_cnn', list(MODELS), 'small_cnn (flax, copied into its '
                           'torch port) or the layout of --torch_checkpoint.')
_BASE_WIDTH = flags.DEFINE_integer('base_width', 64, 'preact_resnet18: width of the first stage.')
_DEPTH = flags.DEFINE_integer('depth', 28, 'wide_resnet, dm_wide_resnet: depth.')
_WIDTH = flags.DEFINE_integer('width', 10, 'wide_resnet, dm_wide_resnet: width factor.')
_ACTIVATION = flags.DEFINE_enum('activation', 'swish', ['swish', 'relu'],
                                'dm_wide_resnet: activation.')
_NORMALIZE = flags.DEFINE_bool('normalize', True, '--torch_checkpoint: the module normalises its '
                               "input with the dataset's mean and std (as robust_jax's exports); "
                               'false: it takes [0,1] pixels as they are.')
_DATA = flags.DEFINE_enum('data', 'fashion_mnist', list(DATA), 'Test images (robust_jax.data).')
_N = flags.DEFINE_integer('n', 500, 'The first n test images.')
_EPS = flags.DEFINE_float('eps', None, 'L-inf radius in [0,1] pixel scale (default: '
                          f'{", ".join(f"{k} {v:.4g}" for k, v in DATA.items())}).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'small_cnn: a robust_jax workdir or '
                                  'checkpoint folder (default: random init).')
_TORCH_CHECKPOINT = flags.DEFINE_string(
    'torch_checkpoint', None, 'A PyTorch state dict (.pt/.pth/.bin) of --model (not small_cnn), '
    'e.g. from launch.py --mode=export.')
_ATTACKS = flags.DEFINE_list('attacks', list(ATTACKS), f'Subset of {ATTACKS}.')
_APGD_STEPS = flags.DEFINE_integer('apgd_steps', 100, 'APGD-CE and APGD-T iterations.')
_NUM_TARGETS = flags.DEFINE_integer('num_targets', 9, 'APGD-T and FAB-T target classes.')
_FAB_STEPS = flags.DEFINE_integer('fab_steps', 100, 'FAB-T iterations per target.')
_SQUARE_QUERIES = flags.DEFINE_integer('square_queries', 5000, 'Square iterations (queries).')
_SEED = flags.DEFINE_integer('seed', 0, 'JAX key, torch seed and random-init seed.')
_SUITE = flags.DEFINE_bool('suite', False, 'Time the standard suite as a cascade (robust_jax '
                           "evaluation vs torchattacks' AutoAttack) instead of single attacks.")
_ROUNDS = flags.DEFINE_integer('rounds', 1, '--suite: interleaved rounds.')
_TORCH_SUITES = flags.DEFINE_multi_enum(
    'torch_suites', list(TORCH_SUITES), TORCH_SUITES, "--suite: torchattacks' AutoAttack as it "
    "ships (shipped: APGD-CE, APGD-T and FAB-T at 10 iterations) and/or at the paper's settings "
    '(paper: 100, as robust_jax runs them); see torch_suite.')
_JAX_PATH = flags.DEFINE_enum('jax_path', 'attack', ['attack', 'eval'], "robust_jax's single "
                              'attacks as one jitted call on all n (attack) or through the '
                              'evaluation loop, in stages (eval).')
_JAX_BATCH = flags.DEFINE_integer('jax_batch', 500, 'Batch size of robust_jax\'s evaluation.')
_TORCH_DEVICE = flags.DEFINE_string(
    'torch_device', 'cpu', "torch's device for the reference ('cuda' on a GPU machine; JAX takes "
    'its default device). With cuda both frameworks compute in full float32 (JAX\'s default '
    "matmul precision 'highest', torch's cuDNN and matmul TF32 off); the logits check always "
    'does.')
_TF32 = flags.DEFINE_bool('tf32', False, '--torch_device=cuda: TF32 in both frameworks (JAX\'s '
                          "GPU default, torch's TF32 switched on) after the logits check.")
_JSON = flags.DEFINE_string('json', None, 'Also write the results here (JSON).')
_TORCH_THREADS = flags.DEFINE_integer(
    'torch_threads', 1, 'torch intra-op threads (on 2 shared cores, 2 threads ran the small '
    'batches of the reference attacks up to 20x slower than 1).')


def _check_flags():
  bad = sorted(set(_ATTACKS.value) - set(ATTACKS))
  if bad:
    raise app.UsageError(f'Unknown attacks {bad}; valid: {list(ATTACKS)}.')
  if _TORCH_CHECKPOINT.value and _MODEL.value == 'small_cnn':
    raise app.UsageError('--torch_checkpoint needs --model of a PyTorch layout '
                         f'({", ".join(MODELS[1:])}); small_cnn takes --checkpoint (a workdir).')
  if _MODEL.value != 'small_cnn' and not _TORCH_CHECKPOINT.value:
    raise app.UsageError(f'--model={_MODEL.value} needs --torch_checkpoint=FILE.pt (a robust_jax '
                         'run exported by launch.py --mode=export, or a RobustBench file).')
  if _CHECKPOINT.value and _TORCH_CHECKPOINT.value:
    raise app.UsageError('Give --checkpoint (small_cnn workdir) or --torch_checkpoint, not both.')


def load_models(dataset, seed=0):
  """(logits_fn, torch module, description): the same weights in JAX and in torch, by the flags."""
  image_shape = dataset.test_images.shape[1:]
  k = dataset.num_classes
  if not _TORCH_CHECKPOINT.value:
    model = models.build(ml_collections.ConfigDict(dict(name='small_cnn')), num_classes=k,
                         mean=dataset.mean, std=dataset.std)
    params, _, source = load_params(model, _CHECKPOINT.value, image_shape,
                                    len(dataset.train_labels), seed)
    net = torch_ports.port('small_cnn', {'params': params}, image_shape, dataset.mean, dataset.std)
    return model_fns.logits_fn(model, params, {}), net, f'small_cnn from {source}'
  path = _TORCH_CHECKPOINT.value
  cfg = ml_collections.ConfigDict(dict(name=_MODEL.value, base_width=_BASE_WIDTH.value,
                                       depth=_DEPTH.value, width=_WIDTH.value,
                                       activation=_ACTIVATION.value))
  mean, std = (dataset.mean, dataset.std) if _NORMALIZE.value else (None, None)
  logits_fn = torch_models.torch_logits_fn(path, cfg, num_classes=k, mean=mean or (0.0,),
                                           std=std or (1.0,), image_shape=image_shape)
  net = torch_layouts.load(path, cfg, num_classes=k, mean=mean, std=std,
                           in_channels=image_shape[-1])
  fields = ', '.join(f'{f}={v}' for f, v in torch_models.architecture(cfg).items())
  return logits_fn, net, (f'{fields} from {path} (sha256 {torch_files.sha256(path)[:16]}..., '
                          f'normalised by the dataset\'s mean/std: {_NORMALIZE.value})')


def _report_suite(out, n, source):
  result = {'seconds_jax': out['jax'], 'cascade_jax': out['cascade_jax'],
            'robust_jax': float(out['robust_jax'].mean()), 'n': n, 'jax_batch': _JAX_BATCH.value,
            'source': source, 'compile_cache': compile_cache.in_use(),
            'torch_suites': {}}
  for w in _TORCH_SUITES.value:
    agree = float(np.mean(out['robust_jax'] == out[f'robust_ref_{w}']))
    ratio = float(np.median(np.array(out[f'ref_{w}']) / np.array(out['jax'])))
    print(f'\nstandard suite: robust_jax {out["robust_jax"].mean():.2%} vs torchattacks '
          f'AutoAttack ({w}: {out[f"steps_ref_{w}"]}) {out[f"robust_ref_{w}"].mean():.2%}, '
          f'per-example agreement {agree:.1%}; seconds robust_jax {out["jax"]}, torchattacks '
          f'{out[f"ref_{w}"]}; median speed-up {ratio:.2f}x', flush=True)
    result['torch_suites'][w] = {
        'steps': out[f'steps_ref_{w}'], 'seconds': out[f'ref_{w}'], 'speedup_median': ratio,
        'cascade': out[f'cascade_ref_{w}'],
        'robust': float(out[f'robust_ref_{w}'].mean()), 'agreement': agree}
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(result, f, indent=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _check_flags()
  eps = DATA[_DATA.value] if _EPS.value is None else _EPS.value
  s = Settings(eps=eps, apgd_steps=_APGD_STEPS.value, num_targets=_NUM_TARGETS.value,
               fab_steps=_FAB_STEPS.value, square_queries=_SQUARE_QUERIES.value, seed=_SEED.value)
  torch.set_num_threads(_TORCH_THREADS.value)
  global _device
  _device = _TORCH_DEVICE.value
  if _device.startswith('cuda'):  # the logits check in full float32 (--tf32: switched after it)
    _set_tf32(False)
  data_cfg = default.get_config().data
  data_cfg.name = _DATA.value
  dataset = data_lib.load(data_cfg)
  try:
    logits_fn, net, source = load_models(dataset, _SEED.value)
  except ValueError as e:  # a file that does not fit the named architecture: the keys, no trace
    raise SystemExit(str(e)) from None
  net = net.to(_device)
  x = dataset.test_images[:_N.value].astype(np.float32) / 255.0
  y = dataset.test_labels[:_N.value].astype(np.int32)
  gap = logits_gap(logits_fn, net, x)
  print(f'{source}; {len(y)} {dataset.name} test images; {s}')
  print(f'jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} '
        f'({_TORCH_DEVICE.value}, {torch.get_num_threads()} threads), torchattacks '
        f'{torchattacks.__version__}' + (f', TF32 {_TF32.value}' if 'cuda' in _TORCH_DEVICE.value
                                         else ''))
  print(f'max |logits_jax - logits_torch| = {gap:.2e} (tolerance {LOGITS_TOL:g})', flush=True)
  if not gap <= LOGITS_TOL:
    raise SystemExit(f'The torch copy of the model differs: logit gap {gap:.2e}.')
  if _device.startswith('cuda') and _TF32.value:
    _set_tf32(True)
  log = lambda m: print(m, flush=True)  # noqa: E731
  if _SUITE.value:
    out = compare_suite(logits_fn, net, x, y, s, _JAX_BATCH.value, _ROUNDS.value, log,
                        _TORCH_SUITES.value)
    _report_suite(out, len(y), source)
    return
  if _JAX_PATH.value == 'eval':
    compare_eval_path(logits_fn, net, x, y, s, log)
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
