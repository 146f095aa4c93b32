"""Feature squeezing (Xu, Evans & Qi 2018), `defense.name='feature_squeezing'`: its config fields,
its facets, its data split, the detector and the view of it that a detector-aware attack has;
robust_jax/eval/detection.py evaluates it with abstention.

The detector compares a classifier's prediction on an input with its predictions on squeezed
copies of it (colour bit-depth reduction, a small median filter):

    score(x) = max_s || softmax(f(x)) - softmax(f(s(x))) ||_1          in [0, 2]

and rejects the input (the deployed model abstains) when score(x) > threshold. The threshold is
the score that a fraction `defense.fpr` of clean held-out images exceed: the last
`defense.calibration_examples` training images, which `training_data` keeps out of training.

Attacks in `eval.attacks` are naive (they see the classifier alone) unless they set
`detector_penalty: c > 0`. Those attack the detector too, as Carlini & Wagner 2017 ("Adversarial
examples are not easily detected") do: they see the logits

    z'(x) = z(x) + onehot(y) * c * relu(score(x) - threshold)

so a margin or CE loss of z' must also bring the score under the threshold. Following He et al.
2017 ("Adversarial example defenses: ensembles of weak defenses are not strong"), the gradient of
the first term is that of the mean of z(x) and z(s(x)) over the squeezers: the attack must fool
the squeezed inputs too, else the score stays high. (On the toy model of tests/test_detection.py,
the penalty alone, with the gradient of z(x), leaves every point detected.) The bit-depth
squeezer is differentiated through BPDA with the identity (Athalye et al. 2018); the median is
differentiated as it is. Points the detector rejects also get a constant added to the true logit
(no gradient) that makes them count as correct in z', so the attack's best-iterate and restart
choices select undetected misclassified points. A large c walls the attack in (crossing the
decision boundary raises the score); c of a few logits per unit of score works best on the toy.
Reported numbers are always recomputed with the true classifier and detector on the returned
points.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import errors
from robust_jax.attacks import wrappers
from robust_jax.defenses import descriptor
from robust_jax.defenses import transforms

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


_LIFT = 0.01  # how far a rejected point's true logit is put above the others in z'


def squeezers(bits, median):
  """[(name, squeeze)]: `squeeze(x) -> x'`, x: f32[B,H,W,C] in [0,1], same shape out.

  Bit depth is wrapped in BPDA: its value is the rounding, its gradient the identity's.
  """
  out = []
  if bits:
    out.append((f'bit_depth_{bits}', wrappers.bpda(lambda v: transforms.bit_depth(v, bits))))
  if median:
    out.append((f'median_{median}x{median}', lambda v: transforms.median_filter(v, median)))
  return out


def score(logits_fn, x, squeeze_fns, logits=None):
  """f32[B]: max over squeezers of the L1 distance between the softmax outputs.

  `logits_fn: x -> f32[B,K]`; `logits`: logits_fn(x) if already computed.
  """
  z = logits_fn(x) if logits is None else logits
  return _distance(z, [logits_fn(s(x)) for s in squeeze_fns])


def _distance(logits, squeezed):
  p = jax.nn.softmax(logits, axis=-1)
  return jnp.max(jnp.stack([jnp.sum(jnp.abs(p - jax.nn.softmax(q, axis=-1)), axis=-1)
                            for q in squeezed]), axis=0)


def threshold_at_fpr(scores, fpr):
  """The smallest calibration score t with at most floor(fpr * N) of the N scores above it.

  Inputs are rejected when score > t, so exactly floor(fpr * N) calibration inputs are rejected
  when no scores tie. Returns a float that is exact in float32.
  """
  s = np.sort(np.asarray(scores, np.float32))
  k = int(math.floor(fpr * len(s) + 1e-9))
  return float(s[len(s) - 1 - min(k, len(s) - 1)])


def detector_aware_logits_fn(logits_fn, squeeze_fns, threshold, y, penalty):
  """The classifier as a detector-aware attack sees it, for the batch with labels `y: int[B]`.

  Returns `x: f32[B,H,W,C] -> f32[B,K]`, only valid on the batch of `y` (the attacks call it on
  that batch, or on restarts of it under vmap). Its value is z'(x) of the module docstring; its
  gradient is that of mean(z(x), z(s_1(x)), ...) plus the penalty, so the attack must fool the
  squeezed inputs too (He et al. 2017).
  """

  def fn(x):
    if x.shape[0] != y.shape[0]:
      raise ValueError(f'detector-aware logits: batch of {x.shape[0]} inputs, {y.shape[0]} labels.')
    z = logits_fn(x)
    members = [z] + [logits_fn(s(x)) for s in squeeze_fns]
    s = _distance(z, members[1:])
    onehot = jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
    grad_view = jnp.mean(jnp.stack(members), axis=0)
    bonus = penalty * jax.nn.relu(s - threshold)
    true = jnp.sum(onehot * z, axis=-1) + bonus
    other = jnp.max(jnp.where(onehot > 0, -jnp.inf, z), axis=-1)
    lift = jnp.where(s > threshold, jax.nn.relu(other - true) + _LIFT, 0.0)
    value = z + onehot * (bonus + lift)[:, None]
    grad_view = grad_view + onehot * bonus[:, None]
    return grad_view + jax.lax.stop_gradient(value - grad_view)

  return fn


def calibration_set(config, dataset):
  """(uint8[N,H,W,C], int32[N]): the last `defense.calibration_examples` training images."""
  n = fields(config)['calibration_examples']
  if n >= len(dataset.train_labels):
    raise errors.ConfigError(
        f'defense.calibration_examples={n} leaves no training images of the '
        f'{len(dataset.train_labels)}; use fewer.')
  return dataset.train_images[-n:], dataset.train_labels[-n:]


def training_data(config, dataset):
  """`dataset` without its last `defense.calibration_examples` training images (the detector's
  calibration set, kept out of training); `defenses.training_data` calls it for this defense."""
  n = len(calibration_set(config, dataset)[1])
  return dataclasses.replace(dataset, train_images=dataset.train_images[:-n],
                             train_labels=dataset.train_labels[:-n])
