"""What a compiled computation costs: FLOPs (XLA's count and a hand count), memory, wall time.

    macs = costs.forward_macs(model, variables, image_shape)     # multiply-adds of one image
    flops = costs.xla_flops(compiled)                            # XLA's HloCostAnalysis
    ceiling = costs.matmul_ceiling()                             # measured f32 matmul GFLOP/s
    t = costs.timed(lambda: fn(x), warmup=1, repeats=5)          # median and every time

FLOP conventions (one multiply-add = 2 FLOPs):
  * one attack step is a forward pass plus the gradient with respect to the input, about
    2 x 2 x (forward multiply-adds): the weight gradients are dead code and XLA prunes them;
  * one training step adds a forward pass and a backward pass with weight and input gradients,
    about 2 x 3 x (forward multiply-adds) (the first layer's input gradient is not needed).
XLA's HloCostAnalysis counts the body of a while loop once, whatever its trip count
(`loop_body_counted_once` checks this on the running backend), so the cost of an attack's
`fori_loop` is normalised with the separately compiled cost of one step. XLA also counts only
the taps of a padded convolution that fall inside the image, so its count of a 'SAME' 5x5
convolution on 28x28 is ~8% below the hand count, which includes the padding.
"""

import functools
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from robust_jax import compile_cache


def forward_macs(model, variables, image_shape):
  """Multiply-adds of one forward pass of one image, counted layer by layer.

  Every parameter named `kernel` (flax Conv and Dense, [..., in, out]) costs
  `output elements x kernel.size / out` multiply-adds, with the module's output shape taken
  from a shape-only trace (`capture_intermediates` under `jax.eval_shape`, nothing runs).
  Normalisation, BatchNorm, activations and pooling are not counted (a few % of a conv net).
  """
  x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)

  def apply(v, x):
    return model.apply(v, x, train=False, capture_intermediates=True, mutable=['intermediates'])

  _, state = jax.eval_shape(apply, variables, x)
  outputs = traverse_util.flatten_dict(state['intermediates'])
  total = 0
  for path, kernel in traverse_util.flatten_dict(variables['params']).items():
    if path[-1] != 'kernel':
      continue
    out = outputs.get(path[:-1] + ('__call__',))
    if out is None:
      raise ValueError(f'No output captured for the module holding {"/".join(path)}.')
    total += int(np.prod(out[0].shape)) * (int(np.prod(kernel.shape)) // kernel.shape[-1])
  return total


def xla_flops(compiled):
  """FLOPs of one call of a compiled function by XLA's cost analysis (0.0 if unavailable)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (some backends do not implement it)
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float((cost or {}).get('flops', 0.0))


@functools.cache
def loop_body_counted_once():
  """Whether XLA's cost analysis counts a while loop's body once rather than per iteration.

  Compiles a 2-trip and a 4-trip fori_loop of one 64x64 matmul and compares their counts.
  """
  a = jnp.ones((64, 64), jnp.float32)

  def loop(trips):
    fn = jax.jit(lambda m: jax.lax.fori_loop(0, trips, lambda _, b: b @ m, m))
    return xla_flops(fn.lower(a).compile())

  return loop(2) == loop(4)


def normalised_flops(raw, steps, step_flops):
  """Total FLOPs of a program whose `steps`-trip loop XLA's raw count holds only once."""
  if steps > 1 and loop_body_counted_once():
    return raw + (steps - 1) * step_flops
  return raw


def default_matmul_size(platform):
  return 2048 if platform == 'cpu' else 8192


def matmul_ceiling(n=0, repeats=10, device=None, dtype=jnp.float32):
  """This machine's ceiling in `dtype`: GFLOP/s of a jitted n x n matmul, the fastest of `repeats`.

  The fastest, not the median: a ceiling is the best the machine does, and on a shared machine
  the median says more about the other users. n = 0 picks 2048 on CPU and 8192 on accelerators.
  A bfloat16 model's share is taken against the bfloat16 ceiling (`dtype=jnp.bfloat16`: bfloat16
  inputs, the product accumulated in float32 as the models' layers do).
  Returns {'gflops', 'gflops_median', 'n', 'times_s', 'dtype'}.
  """
  device = device or jax.devices()[0]
  n = n or default_matmul_size(device.platform)
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.device_put(jax.random.normal(k, (n, n), dtype), device) for k in keys)
  fn = jax.jit(jnp.matmul).lower(a, b).compile()
  t = timed(lambda: fn(a, b), warmup=1, repeats=repeats)
  return {'gflops': 2 * n ** 3 / min(t['times_s']) / 1e9,
          'gflops_median': 2 * n ** 3 / t['median_s'] / 1e9, 'n': n, 'times_s': t['times_s'],
          'dtype': jnp.dtype(dtype).name}


def timed(call, warmup=1, repeats=5, budget_s=0.0):
  """Times `call()` (blocked until ready): warm-up calls, then `repeats` timed ones.

  With budget_s > 0, the number of timed repeats is cut so that they fit in about budget_s
  (at least one), judged from the last warm-up call. Returns {'median_s', 'times_s',
  'warmup_s', 'repeats', 'repeats_cut'}.
  """
  warm = []
  for _ in range(max(warmup, 1 if budget_s > 0 else 0)):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    warm.append(time.perf_counter() - t0)
  n = repeats
  if budget_s > 0 and warm:
    n = max(1, min(repeats, int(budget_s / max(warm[-1], 1e-9))))
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  return {'median_s': statistics.median(times), 'times_s': times, 'warmup_s': warm,
          'repeats': n, 'repeats_cut': n < repeats}


def peak_memory(compiled, device=None):
  """Peak memory of a compiled program: {'bytes', 'source', ...} (which figure is which).

  On GPUs and TPUs: the device allocator's `peak_bytes_in_use` (over the whole process so far).
  On CPU: XLA's static buffer assignment, temp + argument + output bytes of this program; the
  process's max RSS (`ru_maxrss`, everything the process has touched) is reported beside it.
  """
  device = device or jax.devices()[0]
  out = {'max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
  try:
    m = compiled.memory_analysis()
    out['xla_bytes'] = int(m.temp_size_in_bytes + m.argument_size_in_bytes
                           + m.output_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    m = None
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'peak_bytes_in_use' in stats:
    out.update(bytes=int(stats['peak_bytes_in_use']), source='device peak_bytes_in_use')
  elif 'xla_bytes' in out:
    out.update(bytes=out['xla_bytes'], source='XLA memory_analysis temp+argument+output')
  else:
    out.update(bytes=out['max_rss_bytes'], source='process max RSS')
  return out


def environment():
  """Backend, device kind and count, versions, XLA_FLAGS and the persistent compilation cache
  directory (None: compile times are cold), for the record."""
  d = jax.devices()[0]
  return {'platform': d.platform, 'device_kind': d.device_kind, 'devices': jax.device_count(),
          'jax': jax.__version__, 'cpu_count': os.cpu_count(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'matmul_precision': str(jax.config.jax_default_matmul_precision or 'default'),
          'compile_cache': compile_cache.in_use()}
