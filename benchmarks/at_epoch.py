"""PGD-AT (Madry et al. 2018) training steps: robust_jax's train step vs a plain PyTorch loop.

Both train the same model from the same initial weights with Adam (lr 1e-3, the default config)
on the same Fashion-MNIST batches (`data.train_indices`), each step attacking the batch with
PGD-k L-inf (random start, cross-entropy, signed steps, the attack seeing the model in eval mode)
and taking one optimiser step on the cross-entropy of the adversarial batch. Batches come from
host memory every step in both (as `training.loop.fit` feeds them). Steps run in interleaved
blocks (jax block, torch block, ...); the epoch time is the median step time x steps per epoch
(60,000 // batch), an extrapolation that is labelled as such. Used by side_by_side.py.
"""

import gzip
import os
import statistics
import time

import jax
import numpy as np

# Debian's dataset-fashion-mnist; $FASHION_MNIST_DIR points elsewhere (a machine without it).
FMNIST_DIR = os.environ.get('FASHION_MNIST_DIR', '/usr/share/datasets/fashion-mnist')


def fashion_mnist(split, n=None, folder=FMNIST_DIR):
  """(uint8[N,28,28,1], int32[N]) from the IDX files of `split` ('train'/'t10k'), or None."""
  paths = [os.path.join(folder, f'{split}-{kind}-idx{d}-ubyte.gz')
           for kind, d in (('images', 3), ('labels', 1))]
  if not all(os.path.exists(p) for p in paths):
    return None
  with gzip.open(paths[0]) as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
  with gzip.open(paths[1]) as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int32)
  return (x[:n], y[:n]) if n else (x, y)


def _data(seed):
  data = fashion_mnist('train')
  if data is not None:
    return data[0], data[1], 'Fashion-MNIST train'
  r = np.random.default_rng(seed)
  y = r.integers(0, 10, 60000).astype(np.int32)
  x = np.clip(y[:, None, None, None] * 25 + r.integers(0, 30, (60000, 28, 28, 1)), 0, 255)
  return x.astype(np.uint8), y, 'synthetic (no Fashion-MNIST on this machine)'


def compare(args, device, build, log=print):
  """Times args.at_steps training steps of each framework; returns a JSON-able dict.

  `build(name)` returns the robust_jax model; args holds at_model, at_batch, at_steps, at_block,
  at_attack_steps and seed (side_by_side.py's flags).
  """
  import torch  # pylint: disable=g-import-not-at-top

  from benchmarks import peers  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_ports  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from robust_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from robust_jax import defenses  # pylint: disable=g-import-not-at-top
  from robust_jax import parallel  # pylint: disable=g-import-not-at-top
  from robust_jax import rng  # pylint: disable=g-import-not-at-top
  from robust_jax.training import optim  # pylint: disable=g-import-not-at-top
  from robust_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from robust_jax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  images, labels, source = _data(args.seed)
  c = default.get_config()
  c.model.name, c.train.batch_size, c.optim.schedule = args.at_model, args.at_batch, 'constant'
  c.train_attack.steps = args.at_attack_steps
  ta = c.train_attack
  spec = peers.Spec(eps=ta.eps, step_size=ta.step_size, steps=ta.steps)
  model = build(args.at_model)
  tx, _ = optim.make_optimizer(c.optim, 1000, 100)
  state = state_lib.init_state(model, tx, jax.random.key(args.seed), images.shape[1:])
  net = torch_ports.port(args.at_model, {'params': jax.device_get(state.params),
                                         'batch_stats': jax.device_get(state.batch_stats)},
                         images.shape[1:], (0.2860,), (0.3530,)).to(device)
  opt = torch.optim.Adam(net.parameters(), lr=c.optim.learning_rate)
  mesh = parallel.make_mesh(jax.devices()[:1])
  state = parallel.replicate(state, mesh)
  step_fn = jax.jit(step_lib.make_train_step(model, tx, defenses.build(c), c, mesh),
                    donate_argnums=0)
  idx = [data_lib.train_indices(args.seed, i, args.at_batch, len(labels))
         for i in range(args.at_steps + 1)]

  def batch(i):
    return parallel.shard_batch({'image': images[idx[i]], 'label': labels[idx[i]]}, mesh)

  t0 = time.perf_counter()
  step_c = step_fn.lower(state, batch(0), rng.step_key(args.seed, 0)).compile()
  compile_s = time.perf_counter() - t0
  st = {'state': state, 'jax_loss': None, 'torch_loss': None}

  def jax_steps(steps):
    for i in steps:
      st['state'], m = step_c(st['state'], batch(i), rng.step_key(args.seed, i))
    m = jax.device_get(m)
    st['jax_loss'] = float(m['loss_sum']) / int(m['count'])

  def torch_steps(steps):
    for i in steps:
      x = torch.from_numpy(images[idx[i]]).to(device).permute(0, 3, 1, 2).float() / 255.0
      y = torch.from_numpy(labels[idx[i]].astype(np.int64)).to(device)
      net.eval()
      x_adv = peers.torch_pgd(net, x, y, spec)
      net.train()
      loss = torch.nn.functional.cross_entropy(net(x_adv), y)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    st['torch_loss'] = float(loss.detach())  # synchronises with the device

  jax_steps([0])
  torch_steps([0])
  times = {'robust_jax': [], 'torch_plain': []}
  for start in range(1, args.at_steps + 1, args.at_block):
    block = range(start, min(start + args.at_block, args.at_steps + 1))
    for name, fn in (('robust_jax', jax_steps), ('torch_plain', torch_steps)):
      t0 = time.perf_counter()
      fn(block)
      times[name].append((time.perf_counter() - t0) / len(block))
    log(f'  AT steps {block.start}-{block.stop - 1}: robust_jax {times["robust_jax"][-1]:.3f} '
        f's/step, torch {times["torch_plain"][-1]:.3f} s/step')
  spe = 60000 // args.at_batch
  rows = {k: dict(step_s=statistics.median(v), block_step_s=v,
                  epoch_s_extrapolated=statistics.median(v) * spe) for k, v in times.items()}
  rows['robust_jax'].update(compile_s=compile_s, last_loss=st['jax_loss'])
  rows['torch_plain'].update(compile_s=0.0, last_loss=st['torch_loss'])
  return dict(model=args.at_model, batch=args.at_batch, attack=f'PGD-{spec.steps}',
              timed_steps=args.at_steps, steps_per_epoch=spe, data=source, rows=rows,
              speedup=rows['torch_plain']['step_s'] / rows['robust_jax']['step_s'])


def table(r):
  lines = [f'**PGD-AT**, {r["model"]}, batch {r["batch"]}, {r["attack"]} per step, {r["data"]}; '
           f'epoch time EXTRAPOLATED from {r["timed_steps"]} timed steps per framework '
           f'(median step time x {r["steps_per_epoch"]} steps)', '',
           '| implementation | s / step | img/s | epoch s (extrapolated) | compile s | '
           'last loss |', '|---|---:|---:|---:|---:|---:|']
  for name, row in r['rows'].items():
    lines.append(f'| {name} | {row["step_s"]:.4f} | {r["batch"] / row["step_s"]:,.0f} | '
                 f'{row["epoch_s_extrapolated"]:.1f} | {row["compile_s"]:.2f} | '
                 f'{row["last_loss"]:.3f} |')
  lines.append(f'\nrobust_jax epoch speed-up over plain PyTorch: {r["speedup"]:.2f}x')
  return '\n'.join(lines)
