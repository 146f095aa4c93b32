"""XLA:CPU settings that make attack loops faster, applied when robust_jax is imported.

XLA reads `XLA_FLAGS` once, when JAX starts its first backend, so these are added to the
environment at import time (robust_jax/__init__.py) unless:

- `ROBUST_JAX_XLA_DEFAULTS=0` is set (A/B runs: `benchmarks/side_by_side.py` measures both);
- `XLA_FLAGS` already names the flag (the user's value wins);
- the installed jaxlib is not one these flags were checked on (an unknown flag aborts XLA);
- a JAX backend was already started before robust_jax was imported (too late; a warning says so).

The flags only touch the CPU backend's code generation; GPU and TPU programs are unaffected, and
results are the same up to float32 rounding (tests/test_fast_ops.py, tests/test_hlo.py run with
them). What each one does, and what it was measured to give, is in BENCHMARKS.md:

  --xla_cpu_experimental_ynn_fusion_type=-individual_convolution
      XLA 0.10 hands single convolutions to YNNPACK by default; for the small, batched
      convolutions of attack loops XLA's own (Eigen) convolutions are faster on AVX-512 CPUs
      (madry_cnn PGD: 1.5x).
"""

import os
import warnings

FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',)
# jaxlib versions whose XLA accepts every flag above (checked by tests/test_xla_flags.py).
CHECKED_JAXLIB = ('0.10.',)
ENV_SWITCH = 'ROBUST_JAX_XLA_DEFAULTS'


def wanted(existing, jaxlib_version):
  """The flags of FLAGS to add to an XLA_FLAGS value `existing` (none named there already)."""
  if not any(jaxlib_version.startswith(v) for v in CHECKED_JAXLIB):
    return []
  return [f for f in FLAGS if f.split('=')[0] not in existing]


def apply():
  """Adds the missing FLAGS to os.environ['XLA_FLAGS']; returns the flags added."""
  if os.environ.get(ENV_SWITCH, '1') == '0':
    return []
  import jaxlib  # pylint: disable=g-import-not-at-top
  existing = os.environ.get('XLA_FLAGS', '')
  add = wanted(existing, jaxlib.version.__version__)
  if not add:
    return []
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    started = xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    started = False
  if started:
    warnings.warn('robust_jax was imported after JAX started its backends, so its XLA:CPU '
                  f'settings ({" ".join(add)}) do not apply; import robust_jax first or set '
                  'them in XLA_FLAGS (BENCHMARKS.md).', stacklevel=3)
    return []
  os.environ['XLA_FLAGS'] = ' '.join([existing] + add).strip()
  return add
