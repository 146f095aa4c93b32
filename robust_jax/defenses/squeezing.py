"""Feature squeezing's `config.defense` fields (Xu, Evans & Qi 2018).

The detector itself, and its evaluation, are robust_jax/eval/detector.py and detection.py; its
fields are checked here so that `defenses.build` validates them without importing the evaluation.
"""

import math

from robust_jax import errors
from robust_jax.defenses import descriptor

# Trained like standard; deployed with the detector, which the evaluation runs in the loop.
FACETS = descriptor.Facets(deployment='detector')

# config.defense fields of the detector and their defaults (Xu et al.: 1-bit depth and 2x2
# median for MNIST; 0 switches a squeezer off).
DEFAULTS = dict(fpr=0.05, squeeze_bits=1, squeeze_median=2, calibration_examples=1000)


def fields(config):
  """The detector's `config.defense` fields (defaults filled in); ConfigError on a bad one."""
  f = {k: config.defense.get(k, v) for k, v in DEFAULTS.items()}
  fpr = f['fpr']
  if (not isinstance(fpr, (int, float)) or isinstance(fpr, bool) or not math.isfinite(fpr)
      or not 0 < fpr < 1):
    raise errors.ConfigError(f'defense.fpr={fpr!r} must be a number in (0, 1): the fraction of '
                             'clean calibration images the threshold rejects, e.g. 0.05.')
  for name, lo, hi in (('squeeze_bits', 0, 8), ('squeeze_median', 0, 7),
                       ('calibration_examples', 1, None)):
    v = f[name]
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
      raise errors.ConfigError(f'defense.{name}={v!r} must be an integer in [{lo}, '
                               f'{hi or "inf"}].')
  if f['squeeze_median'] == 1 or not (f['squeeze_bits'] or f['squeeze_median']):
    raise errors.ConfigError(
        f'defense.squeeze_bits={f["squeeze_bits"]}, squeeze_median={f["squeeze_median"]}: need '
        'at least one squeezer (bits in [1, 8], median size in [2, 7]; 0 switches one off).')
  if config.eval.suite:
    raise errors.ConfigError(
        f'eval.suite={config.eval.suite!r} is not supported with defense.name='
        f'{config.defense.name!r}: the suite attacks ignore the detector. Set eval.suite=\'\' '
        'and list attacks in eval.attacks (detector_penalty > 0 for detector-aware ones).')
  return f
