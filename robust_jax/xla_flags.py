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

One setting is per program instead (`program_options`, jax.jit's `compiler_options`): the
evaluation programs of the gradient attacks in OLD_FUSION_EMITTERS compile with XLA's older
loop-fusion code generation (`xla_cpu_use_fusion_emitters=false`): the same output bits in the
programs measured, 30-45% less compile time (small_cnn PGD-40 0.9 -> 0.6 s, madry_cnn 1.1 -> 0.6
s), and within a few percent in run time (small_cnn 2-3% slower, madry_cnn 4% faster). Not
process-wide: APGD-T, FAB-T and Square run 5-12% slower with it, and an evaluation's short
programs are where compile time counts (BENCHMARKS.md, "Compile time").
"""

import os
import warnings

FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',)
# jaxlib versions whose XLA accepts every flag above (checked by tests/test_xla_flags.py).
CHECKED_JAXLIB = ('0.10.',)
ENV_SWITCH = 'ROBUST_JAX_XLA_DEFAULTS'
# Attacks whose evaluation programs compile with the older fusion emitters (see above).
OLD_FUSION_EMITTERS = ('fgsm', 'pgd', 'apgd_ce')
_EMITTERS = 'xla_cpu_use_fusion_emitters'


def _checked(jaxlib_version=None):
  """Whether `jaxlib_version` (None: the installed one) is one these settings were checked on."""
  if jaxlib_version is None:
    import jaxlib  # pylint: disable=g-import-not-at-top
    jaxlib_version = jaxlib.version.__version__
  return any(jaxlib_version.startswith(v) for v in CHECKED_JAXLIB)


def wanted(existing, jaxlib_version):
  """The flags of FLAGS to add to an XLA_FLAGS value `existing` (none named there already)."""
  if not _checked(jaxlib_version):
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


def program_options(attack_name):
  """`jax.jit`'s `compiler_options` for the program of attack `attack_name`, or None: XLA:CPU's
  older fusion emitters for OLD_FUSION_EMITTERS, unless switched off (ENV_SWITCH=0), set by the
  user in XLA_FLAGS (theirs wins), on a jaxlib it was not checked on, or when JAX's default
  backend is not the CPU (GPU and TPU programs get no options). The option changes code
  generation only: results equal up to float32 rounding (tests/test_xla_flags.py), bitwise in
  the programs measured at XLA's default optimisation."""
  if (attack_name not in OLD_FUSION_EMITTERS or os.environ.get(ENV_SWITCH, '1') == '0'
      or _EMITTERS in os.environ.get('XLA_FLAGS', '') or not _checked()):
    return None
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != 'cpu':
    return None
  return {_EMITTERS: False}
