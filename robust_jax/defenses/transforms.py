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
and deploys the network behind that transform (see `robust_jax.defenses`; `facets(config)`: its
deployment is 'transform', certifiable for those in CERTIFIABLE). The transforms and their
`config.defense` fields:

  bit_depth       Xu et al. 2018 (feature squeezing): round to `bits` bits. Masks gradients; BPDA
                  with the identity.
  median          Xu et al. 2018: `kernel_size` x `kernel_size` median filter. Differentiable but
                  sparse; BPDA with the identity helps.
  thermometer     Buckman et al. 2018: `levels` binary channels per input channel. Masks
                  gradients; BPDA through a soft thermometer code (Athalye et al. 2018).
  jpeg            Das et al. 2017; Guo et al. 2018: JPEG round trip at `quality` (jpeg.py).
                  Masks gradients; BPDA with the identity.
  random_resize   Xie et al. 2018: random downscale to [min_size, H] and random zero padding back
                  to H x W. Random and differentiable; EOT.
  gaussian_noise  Cohen et al. 2019 (and Gaussian augmentation before them): x + N(0, sigma^2).
                  Random and differentiable; EOT. The network trained behind it is the base
                  classifier of randomised smoothing (robust_jax/eval/certify.py).

The deployed model (`Preprocessed`, the network behind the transform):

    model = Preprocessed(net=SmallCNN(...), transform=from_config(config))
    logits = model.apply(variables, x, train=False, keys=keys)            # f(t(x))
    logits = model.apply(variables, x, train=False, keys=keys, bpda=True)  # same value; gradient
                                                                          # through t's approx

The network's variables sit under 'net'; `method=Preprocessed.network` applies it alone. `keys`
(one PRNG key per example) is required when the transform is random; the draws are each
example's key folded with a hash of its content, so an attack step that changes an input draws
anew and repeating an input repeats its draw.
"""


import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from robust_jax import errors
from robust_jax.attacks import wrappers
from robust_jax.defenses import descriptor
from robust_jax.defenses import jpeg


class Transform(NamedTuple):
  name: str
  apply: Callable
  approx: Optional[Callable]
  random: bool
  differentiable: bool
  # (mean, std) the network normalises the transformed input with, when the transform changes
  # what the input means (thermometer codes); None: the dataset's pixel statistics.
  normalization: Optional[tuple] = None


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


def thermometer(x, levels):
  """Thermometer code (Buckman et al. 2018): channel j of pixel value v is 1[v >= j / levels].

  x: f32[B,H,W,C] in [0,1] -> f32[B,H,W,C*levels] in {0,1}; the `levels` codes of input channel
  c are output channels c*levels .. c*levels + levels-1. Value v lands in bucket floor(v*levels)
  (the top bucket holds v = 1) and its code has that bucket's index + 1 leading ones.
  """
  thresholds = jnp.arange(levels, dtype=jnp.float32) / levels
  code = (x[..., None] >= thresholds).astype(jnp.float32)
  return code.reshape(x.shape[:-1] + (x.shape[-1] * levels,))


def soft_thermometer(x, levels):
  """The BPDA approximation of `thermometer` used by Athalye, Carlini & Wagner 2018 (Sec. 5.2):
  channel j is min(max(v - j / levels, 0), 1).

  Same shape as `thermometer`. Its values are not the code's (BPDA only takes its gradient):
  d/dv of channel j is 1 for every threshold j / levels below v and 0 above, so the gradient
  reaches every pixel value in (0, 1] (and half of it at v = 0), the top bucket included.
  """
  j = jnp.arange(levels, dtype=jnp.float32) / levels
  code = jnp.clip(x[..., None] - j, 0.0, 1.0)
  return code.reshape(x.shape[:-1] + (x.shape[-1] * levels,))


def _placement_matrix(n, size, offset):
  """f32[n,n] M with (M @ v) = v resized bilinearly to `size` entries, placed at `offset`.

  Row i (offset <= i < offset + size) samples v at the half-pixel-centred source coordinate
  (i - offset + 0.5) * n / size - 0.5, clamped to [0, n-1], with the triangle kernel (linear
  interpolation of the two nearest entries); every other row is zero. `size`, `offset` may be
  traced integers, so one compiled function serves every draw.
  """
  u = jnp.arange(n, dtype=jnp.float32) - offset
  inside = (u >= 0) & (u < size)
  src = jnp.clip((u + 0.5) * n / size - 0.5, 0.0, n - 1.0)
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(src[:, None] - jnp.arange(n, dtype=jnp.float32)))
  return jnp.where(inside[:, None], weights, 0.0)


def resize_and_pad(x, size, offset):
  """One image x: f32[H,W,C] resized bilinearly to size = (h, w) <= (H, W), put at offset =
  (top, left) on a zero canvas of shape [H,W,C]. Differentiable in x."""
  h, w = x.shape[0], x.shape[1]
  rows = _placement_matrix(h, size[0], offset[0])
  cols = _placement_matrix(w, size[1], offset[1])
  return jnp.einsum('ik,klc,jl->ijc', rows, x, cols)


def random_resize(x, keys, min_size):
  """Random resizing and padding (after Xie et al. 2018), one draw per example.

  Example i is resized to r x round(r*W/H) with r uniform in {min_size, ..., H}, then put at a
  uniformly random offset on a zero canvas of the input's shape [H,W,C], so any network fits.
  Xie et al. instead enlarge (299 -> up to 331) and pad to a larger canvas (331); keeping the
  input shape is our deviation, with the same two sources of randomness (scale and position).
  """
  h, w = x.shape[1], x.shape[2]
  if min_size > h:
    raise errors.ConfigError(f'defense.min_size={min_size} exceeds the image height {h}; use '
                             f'a value in [1, {h}].')

  def one(image, key):
    k_size, k_top, k_left = jax.random.split(key, 3)
    r = jax.random.randint(k_size, (), min_size, h + 1)
    rw = jnp.clip(jnp.round(r * w / h).astype(jnp.int32), 1, w)
    top = jax.random.randint(k_top, (), 0, h - r + 1)
    left = jax.random.randint(k_left, (), 0, w - rw + 1)
    return resize_and_pad(image, (r, rw), (top, left))

  return jax.vmap(one)(x, keys)


def gaussian_noise(x, keys, sigma):
  """x + N(0, sigma^2 I), one draw per example (Cohen et al. 2019's noise; not clipped)."""
  noise = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
  return x + sigma * noise


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


def _thermometer(f):
  levels = _positive_int(f, 'levels', 2, 256)
  # Codes in {0,1}: the network centres them at 0.5 instead of using pixel statistics.
  return Transform('thermometer', lambda x, keys: thermometer(x, levels),
                   lambda x: soft_thermometer(x, levels), random=False, differentiable=False,
                   normalization=((0.5,), (0.5,)))


def _jpeg(f):
  quality = _positive_int(f, 'quality', 1, 100)
  return Transform('jpeg', lambda x, keys: jpeg.compress(x, quality), None, random=False,
                   differentiable=False)


def _random_resize(f):
  min_size = _positive_int(f, 'min_size', 1, 4096)
  return Transform('random_resize', lambda x, keys: random_resize(x, keys, min_size), None,
                   random=True, differentiable=True)


def _gaussian_noise(f):
  sigma = _number(f, 'sigma', 0.0, 4.0, lo_open=True)
  return Transform('gaussian_noise', lambda x, keys: gaussian_noise(x, keys, sigma), None,
                   random=True, differentiable=True)


# name -> (defaults of config.defense fields, factory(fields) -> Transform)
TRANSFORMS = {
    'bit_depth': (dict(bits=3), _bit_depth),
    'median': (dict(kernel_size=3), _median),
    'thermometer': (dict(levels=16), _thermometer),
    'jpeg': (dict(quality=75), _jpeg),
    'random_resize': (dict(min_size=22), _random_resize),
    'gaussian_noise': (dict(sigma=0.25), _gaussian_noise),
}


# Transforms whose network is the base classifier of randomised smoothing (eval.certify).
CERTIFIABLE = ('gaussian_noise',)


def register(name, defaults, factory):
  TRANSFORMS[name] = (dict(defaults), factory)


def facets(config):
  """The network trained and deployed behind the transform of `config.defense.name`."""
  return descriptor.Facets(deployment='transform',
                           certifiable=config.defense.name in CERTIFIABLE)


def fields(config):
  """{field: value} of the transform of `config.defense.name` (its defaults where unset)."""
  defaults, _ = TRANSFORMS[config.defense.name]
  return {k: config.defense.get(k, v) for k, v in defaults.items()}


def from_config(config):
  """The Transform of `config.defense.name`, or None for defenses without one."""
  name = config.defense.name
  if name not in TRANSFORMS:
    return None
  return TRANSFORMS[name][1](fields(config))


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


class Preprocessed(nn.Module):
  net: nn.Module
  transform: Any  # Transform

  @property
  def random(self):
    return self.transform.random

  @nn.compact
  def __call__(self, x, train=False, keys=None, bpda=False):
    t = self.transform
    if t.random:
      if keys is None:
        raise ValueError(f'The {t.name} transform is random: pass keys (one per example).')
      keys = per_example_keys(keys, x)

    def apply(v):
      return t.apply(v, keys)

    if bpda:
      apply = wrappers.bpda(apply, t.approx)
    if self.is_initializing():  # the network's parameters need only the transformed shape
      out = jax.eval_shape(apply, x)
      return self.net(jnp.zeros(out.shape, out.dtype), train=train)
    return self.net(apply(x), train=train)

  def network(self, x, train=False):
    """The network alone on already transformed inputs: the base classifier of randomised
    smoothing (`model.apply(variables, x_noisy, method=Preprocessed.network)`)."""
    return self.net(x, train=train)


def wrap(net, transform):
  """`net` itself when `transform` is None, else the Preprocessed model."""
  return net if transform is None else Preprocessed(net=net, transform=transform)


def is_random(model):
  return isinstance(model, Preprocessed) and model.transform.random


def is_preprocessed(model):
  return isinstance(model, Preprocessed)
