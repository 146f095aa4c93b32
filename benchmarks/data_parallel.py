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

With --suite=WORKDIR, each child evaluates that trained run's model with the standard suite
(`robust_jax.evaluate`: APGD-CE, APGD-T, FAB-T, Square as a cascade, compiles included) on the
first --n test images, on N devices; --processes=2 adds a run of 2 processes (jax.distributed on
127.0.0.1, gloo on CPU) with N/2 devices each, N = the largest of --devices. Every run's
per-example verdicts are compared with the first run's.

  .venv/bin/python benchmarks/data_parallel.py --suite=workdirs/x --devices=1,2,4 --processes=2
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


def suite_child(args):
  """Runs in a subprocess (one per process of a run): the standard suite on this run's devices;
  process 0 writes JSON and the per-example verdicts."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from robust_jax import distributed  # pylint: disable=g-import-not-at-top
  if args.processes > 1:
    distributed.initialize(dict(coordinator_address=f'127.0.0.1:{args.port}',
                                num_processes=args.processes, process_id=args.process_id))
  import robust_jax  # pylint: disable=g-import-not-at-top
  from robust_jax import costs  # pylint: disable=g-import-not-at-top
  from robust_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from robust_jax import run_io  # pylint: disable=g-import-not-at-top

  run = run_io.load_model(args.suite)
  dataset = data_lib.load(run.config.data)
  x = dataset.test_images[:args.n].astype(np.float32) / 255.0
  y = dataset.test_labels[:args.n].astype(np.int32)
  eps = args.eps or run.config.train_attack.eps
  res = robust_jax.evaluate(run.logits_fn(), x, y, norm='Linf', eps=eps, suite='standard',
                            batch_size=args.batch, sanity_checks=False, seed=0, verbose=False)
  if jax.process_index() == 0:
    tag = f'{args.child}x{args.processes}'
    np.savez(os.path.join(args.out, f'verdicts_{tag}.npz'), **{
        k: np.asarray(v) for k, v in res['per_example'].items() if k in ('clean', 'suite')})
    r = dict(devices=jax.device_count(), processes=jax.process_count(), n=len(y), eps=eps,
             batch=args.batch, seconds=res['eval_seconds'],
             robust=float(np.mean(res['per_example']['suite'])),
             cascade=[(a['name'], a['attacked'], a['broken'], a['seconds'])
                      for a in res['suite']['attacks']],
             environment=costs.environment())
    with open(os.path.join(args.out, f'suite_{tag}.json'), 'w') as f:
      json.dump(r, f)


def suite_runs(args, sizes, platform, out):
  """The --suite runs: N devices in one process for each N of `sizes`, then (--processes=2)
  2 processes with N/2 devices each; returns their results, each with its agreement."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if args.processes > 1 and max(sizes) % args.processes:
    raise SystemExit(f'--processes={args.processes} must divide the largest of --devices '
                     f'({max(sizes)}): each process holds the same number of devices.')
  runs = [(n, 1) for n in sizes] + ([(max(sizes), args.processes)] if args.processes > 1 else [])
  rows, first = [], None
  for n, procs in runs:
    per = n // procs
    port = _free_port()
    cmd = [sys.executable, os.path.abspath(__file__), f'--child={n}', f'--out={out}',
           f'--suite={args.suite}', f'--n={args.n}', f'--batch={args.batch}',
           f'--eps={args.eps}', f'--processes={procs}', f'--port={port}']
    children = [subprocess.Popen(cmd + [f'--process_id={i}'], env=_env(per, platform),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for i in range(procs)]
    logs = [c.communicate()[0] for c in children]
    if any(c.returncode for c in children):
      raise SystemExit(f'{n} devices x {procs} processes failed:\n' +
                       '\n'.join(log[-3000:] for log in logs))
    tag = f'{n}x{procs}'
    with open(os.path.join(out, f'suite_{tag}.json')) as f:
      r = json.load(f)
    v = np.load(os.path.join(out, f'verdicts_{tag}.npz'))
    first = first or v
    r['agreement'] = float(np.mean(v['suite'] == first['suite']))
    r['clean_agreement'] = float(np.mean(v['clean'] == first['clean']))
    rows.append(r)
    print(f'{n} devices x {procs} processes: {r["robust"]:.2%} robust in {r["seconds"]:.1f} s, '
          f'agreement {r["agreement"]:.2%}', flush=True)
  return rows


def suite_table(rows):
  base = rows[0]['seconds']
  lines = ['| devices | processes | per-device batch | suite s (compiles included) | vs first | '
           'robust (%) | per-example agreement (%) | APGD-CE / APGD-T / FAB-T / Square s |',
           '|---:|---:|---:|---:|---:|---:|---:|---|']
  for r in rows:
    stages = ' / '.join(f'{c[3]:.1f}' for c in r['cascade'])
    lines.append(f'| {r["devices"]} | {r["processes"]} | {r["batch"] // r["devices"]} | '
                 f'{r["seconds"]:.1f} | {base / r["seconds"]:.2f}x | {100 * r["robust"]:.1f} | '
                 f'{100 * r["agreement"]:.1f} | {stages} |')
  return '\n'.join(lines)


def _free_port():
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


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
  p.add_argument('--suite', default='', help='a trained run\'s workdir: time the standard '
                 'suite on its model instead of PGD and PGD-AT')
  p.add_argument('--n', type=int, default=512, help='--suite: the first n test images')
  p.add_argument('--eps', type=float, default=0.0, help="--suite: L-inf radius (0: the run's "
                 'train_attack.eps)')
  p.add_argument('--processes', type=int, default=1, help='--suite: also run this many '
                 'processes, the largest of --devices split between them')
  p.add_argument('--child', type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument('--out', default='', help=argparse.SUPPRESS)
  p.add_argument('--port', type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument('--process_id', type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    return suite_child(args) if args.suite else child(args)
  import jax  # pylint: disable=g-import-not-at-top
  platform = args.platform or jax.default_backend()
  sizes = [int(t) for t in args.devices.split(',') if t]
  if platform != 'cpu':  # real devices: only as many as the machine has
    for n in [n for n in sizes if n > jax.device_count()]:
      print(f'{n} devices: skipped, only {jax.device_count()} {platform} device(s)', flush=True)
    sizes = [n for n in sizes if n <= jax.device_count()]
  with tempfile.TemporaryDirectory() as out:
    if args.suite:
      rows = suite_runs(args, sizes, platform, out)
      text = (f'**The standard suite, data-parallel: {args.suite}, first {args.n} test images, '
              f'global batch {args.batch}**\n\n' + suite_table(rows))
    else:
      rows = pgd_runs(args, sizes, platform, out)
      text = (f'**Data-parallel PGD-{args.steps} and PGD-AT step, {args.model}, global batch '
              f'{args.batch}**\n\n' + table(rows))
  print('\n' + text, flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=1)
  return rows


def pgd_runs(args, sizes, platform, out):
  """PGD and a PGD-AT step on N devices for each N of `sizes`, each with its x_adv's distance to
  the first run's."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = []
  for n in sizes:
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
  return rows


if __name__ == '__main__':
  main()
