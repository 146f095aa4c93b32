"""A network behind an input transformation: the deployed model of a transformation defense.

    model = Preprocessed(net=SmallCNN(...), transform=transforms.from_config(config))
    logits = model.apply(variables, x, train=False, keys=keys)            # f(t(x))
    logits = model.apply(variables, x, train=False, keys=keys, bpda=True)  # same value; gradient
                                                                          # through t's approx

The network's variables sit under 'net'; `method=Preprocessed.network` applies it alone. `keys`
(one PRNG key per example) is required when the transform is random; the draws are each
example's key folded with a hash of its content, so an attack step that changes an input draws
anew and repeating an input repeats its draw.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from robust_jax.attacks import wrappers
from robust_jax.defenses import transforms


class Preprocessed(nn.Module):
  net: nn.Module
  transform: Any  # transforms.Transform

  @property
  def random(self):
    return self.transform.random

  @nn.compact
  def __call__(self, x, train=False, keys=None, bpda=False):
    t = self.transform
    if t.random:
      if keys is None:
        raise ValueError(f'The {t.name} transform is random: pass keys (one per example).')
      keys = transforms.per_example_keys(keys, x)

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
