r"""robust_jax's PGD side by side with the peers, in one process, interleaved, on identical inputs.

For each model (small_cnn, madry_cnn, preact_resnet18: robust_jax's flax model and its exact torch
port from benchmarks/torch_ports.py, weights copied, logits asserted equal) it runs PGD L-inf
(Madry et al. 2018) with the same eps, step size and steps, on the same batch, in rounds
A, B, C, ... A, B, C (see benchmarks/peers.py for each implementation), and prints image-steps
per second (median of the timed rounds), GFLOP/s (hand count: 4 x forward multiply-adds per
image-step), the percentage of the float32 matmul ceiling measured in the same run, and the ratio
robust_jax / each peer. Then a PGD-AT comparison (Madry et al. 2018's training) on Fashion-MNIST:
robust_jax's `training.step.make_train_step` against a plain PyTorch loop of the same model,
optimiser (Adam) and PGD, in interleaved blocks of steps, extrapolated to one epoch.

torch lives in .venv-ref (requirements-ref.txt), so on this machine:

  .venv-ref/bin/python benchmarks/side_by_side.py --batch=256 --steps=40
  .venv-ref/bin/python benchmarks/side_by_side.py --peer_path=/tmp/peers   # + cleverhans, foolbox

On a machine with JAX, torch and the runtime packages but not .venv (e.g. a GPU machine):

  PYTHONPATH=. python3 benchmarks/side_by_side.py          # jax on 'gpu', torch on 'cuda'

`--tiny` is a seconds-long smoke run (tests/test_benchmark.py).
"""

import argparse
import json
import os
import statistics
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import at_epoch  # noqa: E402
from benchmarks import peers  # noqa: E402
from benchmarks import torch_ports  # noqa: E402
from robust_jax import costs  # noqa: E402
from robust_jax import model_fns  # noqa: E402
from robust_jax import models  # noqa: E402

FMNIST = dict(shape=(28, 28, 1), num_classes=10, mean=(0.2860,), std=(0.3530,))
IMPLS = ('robust_jax', 'robust_jax_plain_ops', 'torchattacks', 'torch_plain', 'torch_cl',
         'cleverhans', 'foolbox')


def build(name, fast_ops=True):
  """robust_jax model `name` for Fashion-MNIST shapes (fast_ops=False: plain flax ops)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  model = models.build(ml_collections.ConfigDict(dict(name=name, depth=28, width=10)),
                       num_classes=FMNIST['num_classes'], mean=FMNIST['mean'],
                       std=FMNIST['std'])
  if not fast_ops:
    if 'fast_ops' not in getattr(type(model), '__dataclass_fields__', {}):
      return None
    model = model.clone(fast_ops=False)
  return model


def variables_for(model, seed):
  """Random-init variables; BatchNorm running statistics drawn away from (0, 1) so the port's
  copy of them is actually tested."""
  v = jax.tree.map(np.asarray, model_fns.init_variables(model, jax.random.key(seed),
                                                        FMNIST['shape']))
  if 'batch_stats' in v:
    r = np.random.default_rng(seed)
    v['batch_stats'] = jax.tree_util.tree_map_with_path(
        lambda path, a: (r.uniform(0.5, 1.5, a.shape) if path[-1].key == 'var'
                         else r.normal(0.0, 0.1, a.shape)).astype(np.float32), v['batch_stats'])
  return v


def images(n, seed=0):
  """(f32[n,28,28,1] in [0,1], source): Fashion-MNIST test images, else smooth random ones."""
  x = at_epoch.fashion_mnist('t10k', n)
  if x is not None:
    return x[0].astype(np.float32) / 255.0, 'Fashion-MNIST test images'
  coarse = np.random.default_rng(seed).uniform(0, 1, (n, 7, 7, 1)).astype(np.float32)
  return np.repeat(np.repeat(coarse, 4, 1), 4, 2), 'smooth random images (no Fashion-MNIST)'


def compare_model(name, args, device, ceiling, log=print):
  """Builds every implementation for model `name`, checks the port, times them interleaved."""
  model = build(name)
  v = variables_for(model, args.seed)
  net = torch_ports.port(name, v, FMNIST['shape'], FMNIST['mean'], FMNIST['std'])
  x, source = images(args.batch, args.seed)
  predict = jax.jit(lambda v, x: model.apply(v, x, train=False))
  jax_logits = np.asarray(predict(v, x))
  with torch.no_grad():
    torch_logits = net(torch.tensor(x.transpose(0, 3, 1, 2))).numpy()
  gap = float(np.max(np.abs(jax_logits - torch_logits)))
  tol = (1e-4 if args.precision == 'float32' else 3e-2) * max(1.0, float(np.max(np.abs(
      jax_logits))))
  if not gap <= tol:
    raise SystemExit(f'{name}: the torch port differs from the flax model, max logit gap '
                     f'{gap:.2e} > {tol:.1e}.')
  y = jax_logits.argmax(-1).astype(np.int32)  # the model's own labels: clean accuracy is 100%
  steps = args.model_steps.get(name, args.steps)
  spec = peers.Spec(eps=args.eps, step_size=args.step_size, steps=steps)
  impls = []
  for which in args.impls:
    try:
      impls += _build_impl(which, name, model, v, net, x, y, spec, device, args)
    except ImportError as e:
      log(f'  {which}: not run ({type(e).__name__}: {e})')
  log(f'{name}: batch {args.batch}, PGD-{steps}, {source}; max |logits_jax - logits_torch| = '
      f'{gap:.1e}; compile: ' + ', '.join(f'{i.name} {i.compile_s:.2f}s' for i in impls
                                          if i.compile_s))
  times = peers.interleave(impls, args.warmup, args.repeats, log=log)
  flops = 4 * costs.forward_macs(model, v, FMNIST['shape'])
  rows = []
  for impl in impls:
    xa = impl.result()
    acc = float(np.mean(np.asarray(predict(v, xa)).argmax(-1) == y))
    med = statistics.median(times[impl.name])
    rate = args.batch * steps / med
    rows.append(dict(impl=impl.name, note=impl.note, img_steps_per_s=rate, median_s=med,
                     times_s=times[impl.name], compile_s=impl.compile_s,
                     gflops_per_s=rate * flops / 1e9,
                     pct_of_ceiling=100 * rate * flops / 1e9 / ceiling,
                     robust_acc=acc, max_linf=float(np.max(np.abs(xa - x)))))
  return dict(model=name, batch=args.batch, steps=steps, flops_per_img_step=flops,
              logit_gap=gap, data=source, rows=rows)


def _build_impl(which, name, model, v, net, x, y, spec, device, args):
  if which == 'robust_jax':
    return [peers.robust_jax_pgd(model, v, x, y, spec, seed=args.seed)]
  if which == 'robust_jax_plain_ops':
    plain = build(name, fast_ops=False)
    return [peers.robust_jax_pgd(plain, v, x, y, spec, 'robust_jax_plain_ops', args.seed)] \
        if plain is not None else []
  if which in ('torchattacks', 'torch_plain', 'torch_cl'):
    return list(peers.torch_impls(net, x, y, spec, device, [which]).values())
  if which == 'cleverhans':
    return [peers.cleverhans_pgd(model, v, x, y, spec)]
  return [peers.foolbox_pgd(model, v, x, y, spec)]


def table(result, ceiling_note):
  """Markdown: one row per implementation, with robust_jax's speed-up over it."""
  rows = result['rows']
  ours = next((r['img_steps_per_s'] for r in rows if r['impl'] == 'robust_jax'), None)
  lines = [f'**{result["model"]}**, batch {result["batch"]}, PGD-{result["steps"]} L-inf; '
           f'{result["flops_per_img_step"] / 1e6:.2f} MFLOP per image-step (4 x forward MACs); '
           f'{ceiling_note}', '',
           '| implementation | img-steps/s | median s (n) | compile s | GFLOP/s | % ceiling | '
           'robust_jax / this | robust acc % | max abs(delta) |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    ratio = f'{ours / r["img_steps_per_s"]:.2f}x' if ours else '-'
    lines.append(
        f'| {r["impl"]} | {r["img_steps_per_s"]:,.0f} | {r["median_s"]:.3f} '
        f'({len(r["times_s"])}) | {r["compile_s"]:.2f} | {r["gflops_per_s"]:.1f} | '
        f'{r["pct_of_ceiling"]:.0f} | {ratio} | {100 * r["robust_acc"]:.1f} | '
        f'{r["max_linf"]:.4f} |')
  return '\n'.join(lines)


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--models', default=','.join(torch_ports.PORTED))
  p.add_argument('--impls', default=','.join(IMPLS), help=f'subset of {IMPLS}')
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--steps', type=int, default=40)
  p.add_argument('--model_steps', default='', help='e.g. preact_resnet18:4 (slow CPUs)')
  p.add_argument('--eps', type=float, default=0.1)
  p.add_argument('--step_size', type=float, default=0.01)
  p.add_argument('--warmup', type=int, default=1)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--torch_threads', type=int, default=0, help='0: torch default (all cores)')
  p.add_argument('--matmul_size', type=int, default=0, help='0: 2048 on CPU, 8192 on GPU')
  p.add_argument('--peer_path', default='', help='folder holding cleverhans/foolbox packages')
  p.add_argument('--at_model', default='small_cnn', help="'' skips the PGD-AT comparison")
  p.add_argument('--at_batch', type=int, default=128)
  p.add_argument('--at_steps', type=int, default=30, help='timed training steps per framework')
  p.add_argument('--at_block', type=int, default=5, help='steps per interleaved block')
  p.add_argument('--at_attack_steps', type=int, default=7)
  p.add_argument('--precision', default='float32', choices=('float32', 'tf32'),
                 help='GPU matmul/conv precision for both frameworks (CPU: always float32)')
  p.add_argument('--json', default='', help='also write the results here')
  p.add_argument('--tiny', action='store_true', help='seconds-long smoke run')
  args = p.parse_args(argv)
  if args.tiny:
    args.models, args.batch, args.steps, args.repeats = 'small_cnn', 8, 2, 1
    args.at_batch, args.at_steps, args.at_block, args.at_attack_steps = 8, 2, 1, 2
  args.models = [m for m in args.models.split(',') if m]
  args.impls = [m for m in args.impls.split(',') if m]
  bad = [m for m in args.models if m not in torch_ports.PORTED] + [
      i for i in args.impls if i not in IMPLS]
  if bad:
    p.error(f'unknown {bad}; models: {list(torch_ports.PORTED)}, impls: {list(IMPLS)}')
  args.model_steps = {k: int(s) for k, _, s in (t.partition(':') for t in
                                                args.model_steps.split(',') if t)}
  return args


def main(argv=None):
  args = parse(argv)
  if args.peer_path:
    sys.path.append(args.peer_path)
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  # The same arithmetic in both frameworks: full float32 (or TF32 everywhere on GPUs).
  tf32 = args.precision == 'tf32'
  jax.config.update('jax_default_matmul_precision', 'tensorfloat32' if tf32 else 'highest')
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
  env = dict(costs.environment(), torch=torch.__version__, torch_device=str(device),
             torch_threads=torch.get_num_threads())
  n = args.matmul_size or costs.default_matmul_size(jax.devices()[0].platform)
  jc, tc = costs.matmul_ceiling(n), peers.torch_matmul_ceiling(n, device)
  ceiling = max(jc['gflops'], tc['gflops'])
  note = (f'ceiling {ceiling:.1f} GFLOP/s = the faster float32 {n}x{n} matmul (jax '
          f'{jc["gflops"]:.1f}, torch {tc["gflops"]:.1f}), measured in this run')
  print(f'{env}\n{note}', flush=True)
  out = dict(environment=env, ceiling=dict(gflops=ceiling, jax=jc, torch=tc), attacks=[])
  for name in args.models:
    out['attacks'].append(compare_model(name, args, device, ceiling,
                                        log=lambda m: print(m, flush=True)))
    print('\n' + table(out['attacks'][-1], note) + '\n', flush=True)
  if args.at_model:
    out['pgd_at'] = at_epoch.compare(args, device, build, log=lambda m: print(m, flush=True))
    print('\n' + at_epoch.table(out['pgd_at']) + '\n', flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == '__main__':
  main()
