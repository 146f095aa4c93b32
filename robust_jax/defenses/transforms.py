"""Input transformations applied by the deployed model before the network.

Defenses of this family (Guo et al. 2018; Xu et al. 2018; Buckman et al. 2018; Xie et al. 2018)
put a transformation `t` in front of the classifier: the deployed model is `f(t(x))`. When `t` is
non-differentiable or random, a naive gradient attack on `f(t(x))` fails for reasons that have
nothing to do with robustness (Athalye, Carlini & Wagner 2018). The adaptive attacks are BPDA
(the forward pass of `t`, the gradient of a differentiable approximation of it) for the
non-differentiable ones and EOT (the gradient averaged over draws of `t`) for the random ones.

A `Transform` says which it is:

  apply(x, keys) -> x'    x: f32[B,H,W,C] in [0,1]; keys: one PRNG key per example ([B]) for a
                          random transform, None for a deterministic one. The output may have
                          another channel count (thermometer encoding).
  approx(x) -> x'         the BPDA approximation: differentiable, same output shape as `apply`;
                          None means the identity (only for shape-preserving transforms).
  random                  whether `apply` depends on `keys`.
  differentiable          False when the true gradient is zero almost everywhere or undefined,
                          so that BPDA is the meaningful attack.

`TRANSFORMS[name] = (defaults, factory(fields) -> Transform)`; a defense of the same name trains
and deploys the network behind that transform (see `robust_jax.defenses`).
"""

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from robust_jax import errors


class Transform(NamedTuple):
  name: str
  apply: Callable
  approx: Optional[Callable]
  random: bool
  differentiable: bool


def bit_depth(x, bits):
  """Rounds each pixel of x in [0,1] to `bits` bits: round(x * (2^bits - 1)) / (2^bits - 1)."""
  levels = 2.0 ** bits - 1.0
  return jnp.round(x * levels) / levels


def median_filter(x, size):
  """Per-channel median over `size` x `size` windows (stride 1, edges padded by reflection).

  Even sizes take the lower-right-centred window (pad size//2 before, size-1-size//2 after), as
  Xu et al.'s feature squeezing does for 2x2. The median of an even count is the mean of the two
  middle values.
  """
  before, after = size // 2, size - 1 - size // 2
  padded = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), mode='reflect')
  h, w = x.shape[1], x.shape[2]
  windows = jnp.stack([padded[:, i:i + h, j:j + w, :] for i in range(size) for j in range(size)],
                      axis=-1)
  return jnp.median(windows, axis=-1)


def _positive_int(fields, name, lo=1, hi=None):
  v = fields[name]
  if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
    raise errors.ConfigError(f'defense.{name}={v!r} must be an integer in [{lo}, {hi or "inf"}].')
  return v


def _number(fields, name, lo, hi, lo_open=False):
  v = fields[name]
  ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
  ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
  if not ok:
    raise errors.ConfigError(f'defense.{name}={v!r} must be a number in '
                             f'{"(" if lo_open else "["}{lo}, {hi}].')
  return float(v)


def _bit_depth(f):
  bits = _positive_int(f, 'bits', 1, 8)
  return Transform('bit_depth', lambda x, keys: bit_depth(x, bits), None, random=False,
                   differentiable=False)


def _median(f):
  size = _positive_int(f, 'kernel_size', 2, 7)
  # Differentiable almost everywhere (the gradient flows to the selected pixel), yet sparse:
  # BPDA with the identity is the attack of Athalye et al. for median smoothing too.
  return Transform('median', lambda x, keys: median_filter(x, size), None, random=False,
                   differentiable=True)


# name -> (defaults of config.defense fields, factory(fields) -> Transform)
TRANSFORMS = {
    'bit_depth': (dict(bits=3), _bit_depth),
    'median': (dict(kernel_size=3), _median),
}


def register(name, defaults, factory):
  TRANSFORMS[name] = (dict(defaults), factory)


def from_config(config):
  """The Transform of `config.defense.name`, or None for defenses without one."""
  name = config.defense.name
  if name not in TRANSFORMS:
    return None
  defaults, factory = TRANSFORMS[name]
  fields = {k: config.defense.get(k, v) for k, v in defaults.items()}
  return factory(fields)


def per_example_keys(keys, x):
  """Keys that change with each example's content: fold_in(keys[i], hash(x[i])).

  An attack step on a random model thus draws fresh randomness whenever its input changes, and
  the same input always sees the same draw (reproducible, batch-split invariant).
  """
  bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(x).astype(jnp.float32), jnp.uint32)
  bits = bits.reshape(x.shape[0], -1)
  # Integer arithmetic wraps mod 2^32 and is associative: the hash is exact on every backend,
  # batch size and reduction order.
  odd = jax.random.bits(jax.random.key(12345), bits.shape[1:], jnp.uint32) | jnp.uint32(1)
  h = jnp.sum(bits * odd, axis=1, dtype=jnp.uint32)
  return jax.vmap(jax.random.fold_in)(keys, h)
