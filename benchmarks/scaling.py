r"""How the cost of one PGD step grows with batch size, model size and the number of steps.

Three Markdown tables, each from robust_jax.benchmark.measure_attack (PGD L-inf, Madry et al.
2018, last iterate; FLOPs by XLA's cost analysis normalised for the while loop, see
robust_jax/costs.py; the float32 matmul ceiling measured once at the start):

  batch  one model (--model) at each of --batches, --steps steps;
  model  small_cnn, madry_cnn, preact_resnet18 and WideResNets of --wrn_depth at each of
         --wrn_widths (Zagoruyko & Komodakis 2016), at --batch, --steps steps;
  steps  one model at --batch for each of --steps_list: compile time (the step loop is a
         fori_loop, so it should not grow) and time per step.

  .venv/bin/python benchmarks/scaling.py --tables=batch,model,steps
  PYTHONPATH=. python3 benchmarks/scaling.py --wrn_widths=1,2,4,10 --wrn_depth=28   # GPU
"""

import argparse
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from configs import default  # noqa: E402
from robust_jax import benchmark  # noqa: E402
from robust_jax import costs  # noqa: E402
from robust_jax import parallel  # noqa: E402


def _config(args, model, batch, steps, width=10, depth=28):
  c = default.get_config()
  c.model.name, c.model.width, c.model.depth = model, width, depth
  c.benchmark.batch_size, c.benchmark.attack.steps = batch, steps
  c.benchmark.repeats, c.benchmark.warmup = args.repeats, 1
  c.benchmark.time_budget_s = args.time_budget_s
  return c


def measure(args, mesh, ceiling, model, batch, steps, **wrn):
  c = _config(args, model, batch, steps, **wrn)
  net, shape = benchmark.build_model(c, model)
  r = benchmark.measure_attack(c, net, shape, mesh, batch, ceiling)
  label = f'wide_resnet-{wrn["depth"]}-{wrn["width"]}' if model == 'wide_resnet' else model
  r.update(label=label, per_step_ms=1e3 * r['median_s'] / steps)
  return r


ROW = ('| {label} | {batch_size} | {steps} | {compile_s:.2f} | {per_step_ms:.2f} | '
       '{img_steps_per_s:,.0f} | {mflops:.2f} / {hand:.2f} | {gflops_per_s:.1f} | '
       '{pct_of_ceiling:.0f} | '
       '{mib:.0f} |')


def table(title, rows):
  lines = [f'**{title}**; GFLOP/s from the XLA count, or the hand count (4 x forward MACs) where '
           'XLA misses custom-call convolutions (GPU); peak = XLA memory_analysis', '',
           '| model | batch | steps | compile s | ms / step | img-steps/s | '
           'MFLOP / img-step XLA / hand | GFLOP/s | % ceiling | peak MiB |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(ROW.format(**r, mflops=r['flops_per_img_step_xla'] / 1e6,
                            hand=r['flops_per_img_step_hand'] / 1e6,
                            mib=r['peak_memory'].get('xla_bytes', r['peak_memory']['bytes'])
                            / 2 ** 20))
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--tables', default='batch,model,steps')
  p.add_argument('--model', default='madry_cnn')
  p.add_argument('--batches', default='32,64,128,256,512,1024,2048')
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--steps_list', default='1,10,40,100')
  p.add_argument('--models', default='small_cnn,madry_cnn,preact_resnet18')
  p.add_argument('--wrn_depth', type=int, default=16)
  p.add_argument('--wrn_widths', default='1,2,4')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--time_budget_s', type=float, default=0.0)
  p.add_argument('--json', default='')
  args = p.parse_args(argv)
  ints = lambda s: [int(t) for t in s.split(',') if t]  # noqa: E731
  mesh = parallel.make_mesh()
  ceiling = costs.matmul_ceiling()
  print(f'{costs.environment()}\nfloat32 matmul ceiling {ceiling["gflops"]:.1f} GFLOP/s '
        f'(n={ceiling["n"]})', flush=True)
  out = {'environment': costs.environment(), 'ceiling': ceiling}
  tables = args.tables.split(',')
  if 'batch' in tables:
    out['batch'] = [measure(args, mesh, ceiling, args.model, b, args.steps)
                    for b in ints(args.batches)]
    print(table(f'PGD-{args.steps} vs batch size, {args.model}', out['batch']) + '\n',
          flush=True)
  if 'model' in tables:
    rows = [measure(args, mesh, ceiling, m, args.batch, args.steps)
            for m in args.models.split(',') if m]
    rows += [measure(args, mesh, ceiling, 'wide_resnet', args.batch, args.steps,
                     depth=args.wrn_depth, width=w) for w in ints(args.wrn_widths)]
    out['model'] = rows
    print(table(f'PGD-{args.steps} vs model size, batch {args.batch}', rows) + '\n', flush=True)
  if 'steps' in tables:
    out['steps'] = [measure(args, mesh, ceiling, args.model, args.batch, s)
                    for s in ints(args.steps_list)]
    print(table(f'compile and step time vs PGD steps, {args.model}, batch {args.batch}',
                out['steps']) + '\n', flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == '__main__':
  main()
