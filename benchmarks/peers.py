"""PGD L-inf (Madry et al. 2018) as each framework runs it, wrapped for interleaved timing.

Every implementation is an `Impl`: `call()` runs the whole attack once on a batch already on the
device and returns only when the result is ready (torch CUDA work is synchronised), `result()`
gives the last call's adversarial images as numpy NHWC, `compile_s` the one-off compile time.
All run the same algorithm: a uniform random start in the eps-ball (except CleverHans, whose
random start is broken, see below), `steps` signed-gradient steps of cross-entropy, projection
onto the ball and [0,1] after each, the last iterate returned.

  robust_jax      attacks.build('pgd', track_best=False) under jax.jit, one key per example
                  (side_by_side.py also runs it on the model built with fast_ops=False).
  torchattacks    torchattacks.PGD (Kim 2020), as its users call it, NCHW contiguous.
  torch_plain     a hand-written loop: autograd.grad of the summed loss with respect to the input
                  only (parameters frozen), NCHW contiguous; `torch_cl` the same in channels_last.
  cleverhans      cleverhans.jax.attacks.projected_gradient_descent 4.0.0 (Papernot et al. 2018),
                  jitted. It imports `jax.experimental.stax`, removed from JAX years ago, so it
                  runs only through a one-line shim that maps `stax.logsoftmax` to
                  `jax.nn.log_softmax`; its `rand_init` calls `jnp.random.uniform`, which does not
                  exist, so it runs without random start; its step loop is a Python loop, so jit
                  unrolls it (compile time grows with the steps) and each step is a vmap of
                  one-example gradients.
  foolbox         foolbox.attacks.LinfPGD 3.3.4 (Rauber et al. 2017/2020) on a foolbox JAXModel
                  whose logits function is jitted; foolbox drives the steps eagerly from Python
                  through eagerpy.
"""

import dataclasses
import importlib
import sys
import time
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks
from robust_jax import model_fns


@dataclasses.dataclass
class Impl:
  name: str
  call: Callable[[], Any]
  result: Callable[[], np.ndarray]
  compile_s: float = 0.0
  note: str = ''


@dataclasses.dataclass(frozen=True)
class Spec:
  eps: float = 0.1
  step_size: float = 0.01
  steps: int = 40


def robust_jax_pgd(model, variables, x, y, spec, name='robust_jax', seed=0):
  """robust_jax's PGD on one device; x: f32[B,H,W,C] in [0,1], y: int32[B] (numpy)."""
  attack = attacks.build(dict(name='pgd', norm='linf', eps=spec.eps, steps=spec.steps,
                              step_size=spec.step_size, restarts=1, random_start=True, loss='ce',
                              track_best=False))
  stats = variables.get('batch_stats', {})

  def fn(params, stats, x, y, keys):
    return attack(model_fns.logits_fn(model, params, stats), x, y, keys)

  keys = jax.random.key_data(jax.random.split(jax.random.key(seed), x.shape[0]))
  args = jax.device_put((variables['params'], stats, x, y, keys))
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  last = {}

  def call():
    last['x'] = jax.block_until_ready(compiled(*args))

  return Impl(name, call, lambda: np.asarray(last['x']), compile_s)


def _sync(device):
  import torch  # pylint: disable=g-import-not-at-top
  if device.type == 'cuda':
    torch.cuda.synchronize()


def torch_pgd(net, x, y, spec):
  """Hand-written PGD: x f32[B,C,H,W] in [0,1] on net's device, y int64[B]."""
  import torch  # pylint: disable=g-import-not-at-top
  xa = (x + torch.empty_like(x).uniform_(-spec.eps, spec.eps)).clamp_(0.0, 1.0)
  lo, hi = x - spec.eps, x + spec.eps
  for _ in range(spec.steps):
    xa.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(net(xa), y, reduction='sum')
    (grad,) = torch.autograd.grad(loss, xa)
    xa = xa.detach() + spec.step_size * grad.sign()
    xa = torch.minimum(torch.maximum(xa, lo), hi).clamp_(0.0, 1.0)
  return xa.detach()


def torch_impls(net, x_nhwc, y, spec, device, which):
  """torchattacks' PGD and the plain loop (contiguous, channels_last) on `device`."""
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.tensor(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).to(device)
  yt = torch.tensor(y.astype(np.int64)).to(device)
  net = net.to(device).eval()
  out, last = {}, {}

  def wrap(name, fn, note=''):
    def call():
      last[name] = fn()
      _sync(device)
    out[name] = Impl(name, call,
                     lambda: last[name].detach().float().cpu().numpy().transpose(0, 2, 3, 1),
                     note=note)

  if 'torchattacks' in which:
    import torchattacks  # pylint: disable=g-import-not-at-top
    atk = torchattacks.PGD(net, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                           random_start=True)
    wrap('torchattacks', lambda: atk(x, yt), f'torchattacks {torchattacks.__version__}')
  frozen = _frozen(net)
  if 'torch_plain' in which:
    wrap('torch_plain', lambda: torch_pgd(frozen, x, yt, spec), 'NCHW contiguous')
  if 'torch_cl' in which:
    net_cl = _frozen(net).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    wrap('torch_cl', lambda: torch_pgd(net_cl, x_cl, yt, spec), 'channels_last')
  return out


def _frozen(net):
  import copy  # pylint: disable=g-import-not-at-top
  net = copy.deepcopy(net)
  for p in net.parameters():
    p.requires_grad_(False)
  return net


class _JnpWithOldClip(types.ModuleType):
  """jax.numpy, except that clip takes the a_min/a_max keywords JAX has since removed."""

  def __getattr__(self, name):
    return getattr(jnp, name)

  @staticmethod
  def clip(x, a_min=None, a_max=None):
    return jnp.clip(x, a_min, a_max)


def cleverhans_pgd(model, variables, x, y, spec):
  """CleverHans 4.0.0's JAX PGD, through two import-level shims, no random start, jitted.

  CleverHans does not run on current JAX as published: it imports `jax.experimental.stax`
  (removed from JAX) and calls `jnp.clip(a_min=, a_max=)` (keywords removed from JAX). The shims
  map `stax.logsoftmax` to `jax.nn.log_softmax` and give its modules a `jnp` whose clip accepts
  the old keywords; the attack's own code runs unchanged.
  """
  if 'jax.experimental.stax' not in sys.modules:
    sys.modules['jax.experimental.stax'] = types.SimpleNamespace(logsoftmax=jax.nn.log_softmax)
  # The attacks package re-exports each function under its module's name, so go by sys.modules.
  names = ['cleverhans.jax.utils'] + [f'cleverhans.jax.attacks.{m}' for m in (
      'fast_gradient_method', 'projected_gradient_descent')]
  for name in names:
    importlib.import_module(name).np = _JnpWithOldClip('jax.numpy')
  pgd = sys.modules[names[-1]].projected_gradient_descent
  logits = model_fns.logits_fn(model, variables['params'], variables.get('batch_stats', {}))
  onehot = jax.nn.one_hot(y, jax.eval_shape(logits, x[:1]).shape[-1])

  def fn(x, onehot):
    return pgd(logits, x, spec.eps, spec.step_size, spec.steps,
                                         np.inf, clip_min=0.0, clip_max=1.0, y=onehot,
                                         rand_init=False)

  args = jax.device_put((x, onehot))
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  last = {}

  def call():
    last['x'] = jax.block_until_ready(compiled(*args))

  return Impl('cleverhans', call, lambda: np.asarray(last['x']), compile_s,
              'cleverhans 4.0.0 via 2 shims (stax, clip); no random start (its rand_init is '
              'broken); Python step loop unrolled by jit')


def foolbox_pgd(model, variables, x, y, spec):
  """Foolbox 3.3.4's LinfPGD on a JAXModel with a jitted logits function (eager step loop)."""
  import foolbox  # pylint: disable=g-import-not-at-top
  logits = jax.jit(model_fns.logits_fn(model, variables['params'],
                                       variables.get('batch_stats', {})))
  fmodel = foolbox.JAXModel(logits, bounds=(0.0, 1.0))
  atk = foolbox.attacks.LinfPGD(abs_stepsize=spec.step_size, steps=spec.steps,
                                random_start=True)
  xj, yj = jax.device_put((jnp.asarray(x), jnp.asarray(y)))
  last = {}

  def call():
    _, clipped, _ = atk(fmodel, xj, yj, epsilons=spec.eps)
    last['x'] = jax.block_until_ready(clipped)

  return Impl('foolbox', call, lambda: np.asarray(last['x']), 0.0,
              f'foolbox {foolbox.__version__}, eager eagerpy loop, jitted logits')


def interleave(impls, warmup, repeats, log=print):
  """Times every Impl in turn (A, B, C, A, B, C, ...): {name: [seconds of each timed call]}."""
  times = {i.name: [] for i in impls}
  for rep in range(warmup + repeats):
    this = {}
    for impl in impls:
      t0 = time.perf_counter()
      impl.call()
      this[impl.name] = time.perf_counter() - t0
      if rep >= warmup:
        times[impl.name].append(this[impl.name])
    if log:
      tag = ' (warm-up)' if rep < warmup else ''
      log(f'  round {rep + 1}/{warmup + repeats}{tag}: '
          + ', '.join(f'{k} {v:.3f}s' for k, v in this.items()))
  return times


def torch_matmul_ceiling(n, device, repeats=10):
  """GFLOP/s of a float32 n x n torch.mm on `device` (fastest of `repeats` after a warm-up)."""
  import torch  # pylint: disable=g-import-not-at-top
  g = torch.Generator().manual_seed(0)
  a = torch.randn(n, n, generator=g).to(device)
  b = torch.randn(n, n, generator=g).to(device)
  times = []
  for i in range(repeats + 1):
    t0 = time.perf_counter()
    torch.mm(a, b)
    _sync(device)
    if i:
      times.append(time.perf_counter() - t0)
  return {'gflops': 2 * n ** 3 / min(times) / 1e9, 'n': n, 'times_s': times}
