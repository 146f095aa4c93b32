r"""Data-parallel throughput against the number of devices, and that the result does not change.

For each N in --devices, a child process runs robust_jax.benchmark's PGD attack and one PGD-AT
training step on a mesh of N devices (the batch split N ways under shard_map). On CPU the N
devices are fake ones carved from the same cores (XLA_FLAGS=--xla_force_host_platform_device_count
=N), so the table shows the overhead of the split and that it computes the same thing, not a
speed-up; on a machine with N accelerators the same command measures real scaling. Every run's
adversarial images are compared with the 1-device run's (one PRNG key per example, so they must
agree to float rounding).

  .venv/bin/python benchmarks/data_parallel.py --devices=1,2,4 --model=madry_cnn --batch=256
  PYTHONPATH=. python3 benchmarks/data_parallel.py --devices=1,2,4,8      # GPUs: N <= count
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)


def child(args):
  """Runs in a subprocess: measures on the first args.child devices; writes JSON and x_adv."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from configs import default  # pylint: disable=g-import-not-at-top
  from robust_jax import benchmark  # pylint: disable=g-import-not-at-top
  from robust_jax import costs  # pylint: disable=g-import-not-at-top
  from robust_jax import parallel  # pylint: disable=g-import-not-at-top

  c = default.get_config()
  c.model.name, c.benchmark.batch_size = args.model, args.batch
  c.benchmark.attack.steps, c.train_attack.steps = args.steps, args.train_attack_steps
  c.benchmark.repeats, c.benchmark.matmul_size = args.repeats, args.matmul_size
  mesh = parallel.make_mesh(jax.devices()[:args.child])
  ceiling = costs.matmul_ceiling(args.matmul_size)
  model, shape = benchmark.build_model(c, args.model)
  r = benchmark.measure_attack(c, model, shape, mesh, args.batch, ceiling, keep_output=True)
  np.save(os.path.join(args.out, f'x_adv_{args.child}.npy'), r.pop('x_adv'))
  r['train_step'] = benchmark.measure_train_step(c, model, shape, mesh, args.batch, ceiling)
  r.update(ceiling_gflops=ceiling['gflops'], environment=costs.environment())
  with open(os.path.join(args.out, f'result_{args.child}.json'), 'w') as f:
    json.dump(r, f)


def _env(n, platform):
  env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  if platform == 'cpu':
    flags = [f for f in env.get('XLA_FLAGS', '').split()
             if not f.startswith('--xla_force_host_platform_device_count')]
    env.update(XLA_FLAGS=' '.join(flags + [f'--xla_force_host_platform_device_count={n}']),
               JAX_PLATFORMS='cpu')
  return env


def table(rows):
  lines = ['| devices | platform | per-device batch | attack img-steps/s | attack compile s | '
           'vs 1 device | max abs(x_adv - x_adv 1 device) | AT img/s | AT compile s |',
           '|---:|---|---:|---:|---:|---:|---:|---:|---:|']
  base = rows[0]['img_steps_per_s']
  for r in rows:
    t = r['train_step']
    lines.append(f'| {r["devices"]} | {r["environment"]["platform"]} | '
                 f'{r["batch_size"] // r["devices"]} | {r["img_steps_per_s"]:,.0f} | '
                 f'{r["compile_s"]:.2f} | {r["img_steps_per_s"] / base:.2f}x | '
                 f'{r["x_adv_gap"]:.1e} | {t["img_per_s"]:,.1f} | {t["compile_s"]:.2f} |')
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--devices', default='1,2,4')
  p.add_argument('--model', default='madry_cnn')
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--train_attack_steps', type=int, default=7)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--matmul_size', type=int, default=0)
  p.add_argument('--platform', default='', help="'' -> jax's default backend")
  p.add_argument('--json', default='')
  p.add_argument('--child', type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument('--out', default='', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    return child(args)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  platform = args.platform or jax.default_backend()
  available = jax.device_count() if platform != 'cpu' else None
  rows = []
  with tempfile.TemporaryDirectory() as out:
    for n in [int(t) for t in args.devices.split(',') if t]:
      if available is not None and n > available:
        print(f'{n} devices: skipped, only {available} {platform} device(s)', flush=True)
        continue
      cmd = [sys.executable, os.path.abspath(__file__), f'--child={n}', f'--out={out}'] + [
          f'--{k}={getattr(args, k)}' for k in ('model', 'batch', 'steps', 'train_attack_steps',
                                                'repeats', 'matmul_size')]
      proc = subprocess.run(cmd, env=_env(n, platform), capture_output=True, text=True)
      if proc.returncode:
        raise SystemExit(f'{n} devices failed:\n{proc.stderr[-3000:]}')
      with open(os.path.join(out, f'result_{n}.json')) as f:
        r = json.load(f)
      first = rows[0]['devices'] if rows else n
      r['x_adv_gap'] = float(np.max(np.abs(np.load(os.path.join(out, f'x_adv_{n}.npy'))
                                           - np.load(os.path.join(out, f'x_adv_{first}.npy')))))
      rows.append(r)
      print(f'{n} devices: {r["img_steps_per_s"]:,.0f} img-steps/s, gap {r["x_adv_gap"]:.1e}',
            flush=True)
  print(f'\n**Data-parallel PGD-{args.steps} and PGD-AT step, {args.model}, global batch '
        f'{args.batch}**\n\n' + table(rows), flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == '__main__':
  main()
