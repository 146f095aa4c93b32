r"""Throughput of attacks and adversarial training: `launch.py --mode=benchmark`.

For each model and batch size it measures, on random data of the dataset's image shape:

  * the attack `benchmark.attack` (default PGD-40 L-inf, Madry et al. 2018): image-steps per
    second (batch x steps / median wall time over `benchmark.repeats` calls after
    `benchmark.warmup` warm-up calls, every time kept), compile time, FLOPs per image-step from
    XLA's cost analysis (normalised for while loops, see robust_jax/costs.py) and by hand
    (4 x forward multiply-adds), achieved GFLOP/s and its percentage of the float32 matmul
    ceiling measured in the same run, and peak memory;
  * one full training step (`training.step.make_train_step` with `config.defense`, by default
    PGD-AT, and `config.train_attack`): the same figures, per training image.

    python launch.py --mode=benchmark --config.model.name=madry_cnn \
        --config.benchmark.batch_size=256 --workdir=workdirs/bench
    python launch.py --mode=benchmark --workdir=workdirs/bench_all \
        --config.benchmark.models=small_cnn,madry_cnn,preact_resnet18,wide_resnet \
        --config.benchmark.batch_sizes=256,1024 --config.benchmark.model_steps=wide_resnet:2

prints a Markdown table and the JSON (also written to WORKDIR/benchmark.json; its last line is
the JSON). The attack runs data-parallel over all devices, with one PRNG key per example, so its
result does not depend on the number of devices.
"""

import copy
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from robust_jax import attacks
from robust_jax import costs
from robust_jax import data as data_lib
from robust_jax import defenses as defense_lib
from robust_jax import errors
from robust_jax import model_fns
from robust_jax import models
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax import xla_flags
from robust_jax.attacks import objectives
from robust_jax.training import optim
from robust_jax.training import state as state_lib
from robust_jax.training import step as step_lib


def _names(text, field):
  names = [t.strip() for t in str(text).split(',') if t.strip()]
  bad = [n for n in names if n not in models.MODELS]
  if bad:
    raise errors.ConfigError(f'{field}={text!r}: unknown model {bad[0]!r}; valid: '
                             f'{sorted(models.MODELS)} (comma-separated).')
  return names


def _ints(text, field):
  try:
    values = [int(t) for t in str(text).split(',') if t.strip()]
  except ValueError:
    values = [0]
  if any(v < 1 for v in values):
    raise errors.ConfigError(f'{field}={text!r} must be comma-separated integers >= 1, '
                             'e.g. 256,1024.')
  return values


def model_steps(text):
  """'wide_resnet:2,preact_resnet18:10' -> {'wide_resnet': 2, 'preact_resnet18': 10}."""
  out = {}
  for item in [t.strip() for t in str(text).split(',') if t.strip()]:
    name, _, steps = item.partition(':')
    ok = name in models.MODELS and steps.isdigit() and int(steps) >= 1
    if not ok:
      raise errors.ConfigError(
          f'benchmark.model_steps={text!r}: {item!r} must be MODEL:STEPS with STEPS >= 1 and '
          f'MODEL one of {sorted(models.MODELS)}, e.g. wide_resnet:2.')
    out[name] = int(steps)
  return out


def validate(config, num_devices=1):
  """ConfigError on a bad `benchmark.*` field; returns (model names, batch sizes)."""
  b = config.benchmark
  names = _names(b.models, 'benchmark.models') or [config.model.name]
  sizes = _ints(b.batch_sizes, 'benchmark.batch_sizes') or [b.batch_size]
  for size in sizes:
    if size % num_devices:
      raise errors.ConfigError(f'benchmark batch size {size} is not divisible by the '
                               f'{num_devices} devices; use a multiple of {num_devices}.')
  if not isinstance(b.warmup, int) or b.warmup < 0:
    raise errors.ConfigError(f'benchmark.warmup={b.warmup!r} must be an integer >= 0.')
  if not isinstance(b.time_budget_s, (int, float)) or b.time_budget_s < 0:
    raise errors.ConfigError(f'benchmark.time_budget_s={b.time_budget_s!r} must be >= 0 '
                             '(0: no budget).')
  if not isinstance(b.matmul_size, int) or b.matmul_size < 0:
    raise errors.ConfigError(f'benchmark.matmul_size={b.matmul_size!r} must be an integer >= 0 '
                             '(0: 2048 on CPU, 8192 on accelerators).')
  model_steps(b.model_steps)
  attacks.validate(b.attack, 'benchmark.attack')
  return names, sizes


def build_model(config, name):
  """(model, image_shape): model `name` with config.model's other fields, the data's shape."""
  info = data_lib.DATASETS[config.data.name]
  cfg = ml_collections.ConfigDict(config.model.to_dict())
  cfg.name = name
  model = models.build(cfg, num_classes=info['num_classes'], mean=info['mean'], std=info['std'])
  return model, tuple(info['shape'])


def _random_batch(seed, batch_size, image_shape, num_classes=10):
  r = np.random.default_rng(seed)
  images = r.integers(0, 256, size=(batch_size,) + tuple(image_shape)).astype(np.uint8)
  return images, r.integers(0, num_classes, size=(batch_size,)).astype(np.int32)


def _gflops(result, key_rate, xla, hand, ceiling):
  """Achieved GFLOP/s from XLA's count, or from the hand count where XLA's is off by over 2x
  (XLA:GPU's cost analysis does not see cuDNN convolutions, which are custom calls)."""
  use_xla = 0.5 < xla / hand < 2.0 if hand else xla > 0
  rate = result[key_rate] * (xla if use_xla else hand) / 1e9
  return {'gflops_per_s': rate, 'pct_of_ceiling': 100.0 * rate / ceiling['gflops'],
          'flops_source': 'xla' if use_xla else 'hand (XLA count off by > 2x)'}


def step_flops(model, variables, attack_cfg, bn_mode, local_shape):
  """XLA FLOPs of one attack step (forward + input gradient) on one device's batch."""
  loss_fn = objectives.get(attack_cfg.get('loss', 'ce'))

  def grad(params, stats, x, onehot):
    logits_fn = model_fns.logits_fn(model, params, stats, bn_mode)
    return jax.grad(lambda xa: jnp.sum(loss_fn(logits_fn(xa), onehot)))(x)

  x = jax.ShapeDtypeStruct(local_shape, jnp.float32)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  onehot = jax.ShapeDtypeStruct(logits.shape, jnp.float32)
  compiled = jax.jit(grad).lower(variables['params'], variables.get('batch_stats', {}), x,
                                 onehot).compile()
  return costs.xla_flops(compiled)


def measure_attack(config, model, image_shape, mesh, batch_size, ceiling, attack_cfg=None,
                   keep_output=False):
  """Times `attack_cfg` (default benchmark.attack) on `model`; returns a JSON-able dict.

  keep_output: also return the last call's adversarial images (numpy, key 'x_adv').
  """
  b = config.benchmark
  attack_cfg = attack_cfg or b.attack
  variables = model_fns.init_variables(model, rng.root_key(config.seed, rng.INIT), image_shape)
  params, stats = variables['params'], variables.get('batch_stats', {})
  attack = attacks.build(attack_cfg, where='benchmark.attack', load_model=run_io.load_model)
  bn_mode = config.model.attack_bn_mode

  def per_device(params, stats, x, y, keys):
    return attack(model_fns.logits_fn(model, params, stats, bn_mode), x, y, keys)

  # The options the evaluation compiles this attack with (batch_fns), so the harness times its
  # program.
  fn = jax.jit(parallel.per_device(per_device, mesh, (P(), P(), P('data'), P('data'), P('data')),
                                   P('data')),
               compiler_options=xla_flags.program_options(attack_cfg['name']))
  images, labels = _random_batch(config.seed, batch_size, image_shape)
  keys = jax.random.key_data(jax.random.split(jax.random.key(config.seed), batch_size))
  args = (*parallel.replicate((params, stats), mesh),
          *parallel.shard_batch((images.astype(np.float32) / 255.0, labels, np.asarray(keys)),
                                mesh))
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  last = {}

  def call():
    last['x'] = compiled(*args)
    return last['x']

  t = costs.timed(call, b.warmup, b.repeats, b.time_budget_s)
  steps = attack_cfg.get('steps', 1) * attack_cfg.get('restarts', 1)
  ndev = mesh.devices.size
  local = (batch_size // ndev,) + tuple(image_shape)
  one_step = step_flops(model, variables, attack_cfg, bn_mode, local) * ndev
  raw = costs.xla_flops(compiled) * ndev
  total = costs.normalised_flops(raw, steps, one_step)
  macs = costs.forward_macs(model, variables, image_shape)
  out = {'batch_size': batch_size,
         'attack': attacks.describe(attack_cfg), 'steps': steps, 'devices': ndev,
         'img_steps_per_s': batch_size * steps / t['median_s'], 'compile_s': compile_s,
         'median_s': t['median_s'], 'times_s': t['times_s'], 'warmup_s': t['warmup_s'],
         'repeats': t['repeats'], 'repeats_cut': t['repeats_cut'],
         'forward_macs_per_img': macs,
         'flops_per_img_step_hand': 4 * macs,
         'flops_per_img_step_xla': total / (steps * batch_size),
         'xla_flops_raw': raw, 'xla_flops_one_step': one_step,
         'xla_loop_body_counted_once': costs.loop_body_counted_once()}
  out.update(_gflops(out, 'img_steps_per_s', out['flops_per_img_step_xla'],
                     out['flops_per_img_step_hand'], ceiling))
  out['peak_memory'] = costs.peak_memory(compiled)
  if keep_output:
    out['x_adv'] = np.asarray(jax.device_get(last['x']))
  return out


def measure_train_step(config, model, image_shape, mesh, batch_size, ceiling):
  """Times one `training.step.make_train_step` step (config.defense, config.train_attack)."""
  b = config.benchmark
  tx, _ = optim.make_optimizer(config.optim, 1000, 100)
  resolved = defense_lib.resolve(config, run_io.load_model)
  defense = resolved.objective
  state = state_lib.init_state(model, tx, rng.root_key(config.seed, rng.INIT), image_shape,
                               config.optim.ema_decay,
                               **_carry(step_lib, defense, config, image_shape, batch_size))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  state = parallel.replicate(state, mesh)
  # jit of the (possibly already jitted) step, so that it can be lowered and compiled here.
  step_fn = jax.jit(step_lib.make_train_step(model, tx, defense, config, mesh), donate_argnums=0)
  images, labels = _random_batch(config.seed, batch_size, image_shape)
  batch = parallel.shard_batch({'image': images, 'label': labels}, mesh)
  keys = [rng.step_key(config.seed, i) for i in range(b.warmup + b.repeats + 2)]
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch, keys[0]).compile()
  compile_s = time.perf_counter() - t0
  holder = {'state': state, 'i': 0}

  def call():
    holder['i'] += 1
    holder['state'], metrics = compiled(holder['state'], batch, keys[holder['i'] % len(keys)])
    return metrics

  t = costs.timed(call, b.warmup, b.repeats, b.time_budget_s)
  ta = resolved.train_attack
  runs_attack = resolved.facets.training_attack
  steps = ta['steps'] * ta.get('restarts', 1) if runs_attack else 0
  ndev = mesh.devices.size
  local = (batch_size // ndev,) + tuple(image_shape)
  one_step = step_flops(model, variables, ta, config.model.attack_bn_mode, local) * ndev
  raw = costs.xla_flops(compiled) * ndev
  macs = costs.forward_macs(model, variables, image_shape)
  out = {'defense': config.defense.name, 'train_attack': attacks.describe(ta),
         'attack_steps': steps, 'batch_size': batch_size,
         'img_per_s': batch_size / t['median_s'], 'compile_s': compile_s,
         'median_s': t['median_s'], 'times_s': t['times_s'], 'warmup_s': t['warmup_s'],
         'repeats': t['repeats'], 'repeats_cut': t['repeats_cut'],
         'flops_per_img_hand': (4 * steps + 6) * macs,
         'flops_per_img_xla': costs.normalised_flops(raw, steps, one_step) / batch_size,
         'xla_flops_raw': raw}
  out.update(_gflops(out, 'img_per_s', out['flops_per_img_xla'], out['flops_per_img_hand'],
                     ceiling))
  out['peak_memory'] = costs.peak_memory(compiled)
  return out


def _carry(train_lib, defense, config, image_shape, batch_size):
  """init_state's carry_shape argument where the training code has one (free AT)."""
  if not hasattr(train_lib, 'carry_shape'):
    return {}
  shape = train_lib.carry_shape(defense, config, image_shape)
  return {'carry_shape': None if shape is None else (batch_size,) + tuple(shape[1:])}


def run(config, model, image_shape, mesh, ceiling=None, name=None):
  """One model at `config.benchmark.batch_size`: the attack, then (optionally) a train step."""
  b = config.benchmark
  ceiling = ceiling or _ceiling(config)
  out = measure_attack(config, model, image_shape, mesh, b.batch_size, ceiling)
  out.update(model=name or config.model.name, platform=jax.devices()[0].platform,
             ceiling_gflops=ceiling['gflops'], ceiling_dtype=ceiling.get('dtype', 'float32'),
             model_dtype=config.model.get('dtype', 'float32'))
  if b.train_step:
    out['train_step'] = measure_train_step(config, model, image_shape, mesh, b.batch_size,
                                           ceiling)
  return out


def _ceiling(config):
  """The matmul ceiling in the models' compute dtype (model.dtype): a bfloat16 model's share is
  of the bfloat16 peak."""
  dtype = models.compute_dtype(config.model.get('dtype', 'float32'))
  return costs.matmul_ceiling(config.benchmark.matmul_size, dtype=dtype)


def sweep(config, mesh, log=print):
  """Every model of benchmark.models x every size of benchmark.batch_sizes; returns the JSON."""
  names, sizes = validate(config, mesh.devices.size)
  overrides = model_steps(config.benchmark.model_steps)
  ceiling = _ceiling(config)
  log(f'{ceiling["dtype"]} matmul ceiling: {ceiling["gflops"]:.1f} GFLOP/s (n={ceiling["n"]})')
  results = []
  for name in names:
    model, image_shape = build_model(config, name)
    for size in sizes:
      cfg = copy.deepcopy(config)
      with cfg.unlocked():
        cfg.model.name = name
        cfg.benchmark.batch_size = size
        if name in overrides:
          cfg.benchmark.attack.steps = overrides[name]
          cfg.train_attack.steps = min(cfg.train_attack.steps, overrides[name])
      r = run(cfg, model, image_shape, mesh, ceiling, name)
      r['steps_overridden'] = name in overrides
      results.append(r)
      log(table([r], header=len(results) == 1))  # the header before the first row only
  return {'environment': costs.environment(), 'ceiling': ceiling, 'results': results}


def _mib(mem):
  if 'xla_bytes' in mem and mem['bytes'] != mem['xla_bytes']:
    return f'{mem["bytes"] / 2 ** 20:.0f} / {mem["xla_bytes"] / 2 ** 20:.0f}'
  return f'{mem["bytes"] / 2 ** 20:.0f}'


def table(results, header=True):
  """A Markdown table, one row per (model, batch size)."""
  lines = ['| model | batch | attack steps | img-steps/s | median s (n) | compile s | '
           'GFLOP/img-step XLA / hand | GFLOP/s | % ceiling | peak MiB | AT img/s | '
           'AT compile s | AT GFLOP/s | AT % ceiling | AT peak MiB |',
           '|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  lines = lines if header else []
  for r in results:
    steps = f'{r["steps"]}{" (cut)" if r.get("steps_overridden") else ""}'
    row = [r['model'], str(r['batch_size']), steps, f'{r["img_steps_per_s"]:,.0f}',
           f'{r["median_s"]:.3f} ({r["repeats"]})', f'{r["compile_s"]:.2f}',
           f'{r["flops_per_img_step_xla"] / 1e9:.4f} / {r["flops_per_img_step_hand"] / 1e9:.4f}',
           f'{r["gflops_per_s"]:.1f}', f'{r["pct_of_ceiling"]:.0f}', _mib(r['peak_memory'])]
    t = r.get('train_step')
    row += ([f'{t["img_per_s"]:,.1f}', f'{t["compile_s"]:.2f}', f'{t["gflops_per_s"]:.1f}',
             f'{t["pct_of_ceiling"]:.0f}', _mib(t['peak_memory'])] if t else ['-'] * 5)
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines)


def main(config, workdir, mesh):
  """Runs the benchmark (a sweep when benchmark.models / batch_sizes are set), prints a Markdown
  table and then the JSON on one line, and writes WORKDIR/benchmark.json. Returns the JSON."""
  names, sizes = validate(config, mesh.devices.size)
  if len(names) == 1 and len(sizes) == 1 and not config.benchmark.model_steps:
    config.benchmark.batch_size = sizes[0]
    config.model.name = names[0]
    model, image_shape = build_model(config, names[0])
    out = run(config, model, image_shape, mesh)
    out['environment'] = costs.environment()
    print(table([out]), flush=True)
  else:
    out = sweep(config, mesh, log=lambda m: print(m, flush=True))
  first = (out.get('results') or [out])[0]
  notes = ['peak MiB: ' + first['peak_memory']['source'] + (
      ' (a process-wide high-water mark) / XLA memory_analysis of this program'
      if first['peak_memory']['bytes'] != first['peak_memory'].get('xla_bytes') else ''),
           f'GFLOP/s from the {first["flops_source"]} FLOP count',
           f'compute dtype {first["model_dtype"]}; % ceiling: of the {first["ceiling_dtype"]} '
           f'matmul ceiling, {first["ceiling_gflops"]:,.1f} GFLOP/s']
  if any(r.get('steps_overridden') for r in out.get('results', [])):
    notes.append('(cut): fewer attack steps for that model (benchmark.model_steps); the train '
                 'step uses at most that many train_attack steps too')
  print('\n'.join(notes), flush=True)
  if jax.process_index() == 0 and workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'benchmark.json'), 'w') as f:
      json.dump(out, f, indent=1)
  print(json.dumps(out), flush=True)
  return out
