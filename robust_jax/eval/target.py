"""The model an evaluation attacks and scores, whatever built it: a flax module with its weights,
or any JAX function from images to logits.

    t = target.of_flax(model, params, batch_stats)       # a robust_jax (flax linen) model
    t = target.of_function(lambda x: net(x))             # any JAX function, weights closed over
    t = target.of_function(lambda p, x: f(p, x), params=p)  # weights passed as an argument
    logits = t.apply(t.variables)(x)                     # x: f32[B,H,W,C] in [0,1] -> f32[B,K]
    seen = t.apply(t.variables, keys, samples=8, bpda=True)  # the view of an EOT/BPDA attack

`variables` is what every jitted evaluation step takes as an argument (replicated over the
mesh); `apply(variables, keys=None, samples=1, bpda=False)` returns the logits function: the
model in inference mode (`loop.BN_MODE`); for a random model, drawing with one key per example
(`keys`, default fixed keys) and averaging `samples` draws of the log-probabilities (EOT); for an
input-transformation model with `bpda`, the gradient of the transformation's approximation.
A plain function is deterministic and ignores keys, samples and bpda, unless it is declared
random (`of_function(..., random=True)`: it then takes a key and draws per example).
"""

from typing import Any, Callable, NamedTuple

import jax

from robust_jax import model_fns
from robust_jax.defenses import transforms
from robust_jax.eval import loop


class Transform(NamedTuple):
  """An input transformation in front of the network, as the sanity checks ask about it."""
  name: str
  differentiable: bool
  random: bool


class Target(NamedTuple):
  """A model as the evaluation attacks and scores it (see the module docstring)."""
  apply: Callable     # (variables, keys=None, samples=1, bpda=False) -> (x -> logits)
  variables: Any      # the weights every evaluation step takes (replicated over the mesh)
  random: bool = False
  transform: Any = None   # a `Transform`, or None


def of_flax(model, params, batch_stats):
  """A robust_jax flax model (possibly random or behind an input transformation)."""

  def apply(variables, keys=None, samples=1, bpda=False):
    p, stats = variables
    return model_fns.eot_logits_fn(model, p, stats, loop.BN_MODE, keys, samples, bpda=bpda)

  transform = None
  if transforms.is_preprocessed(model):
    t = model.transform
    transform = Transform(t.name, t.differentiable, t.random)
  return Target(apply, (params, batch_stats), model_fns.is_random(model), transform)


def of_function(logits_fn, params=None, random=False):
  """Any JAX function: `logits_fn(x)`, or `logits_fn(params, x)` when `params` is given.

  `random`: the function draws randomness (a randomised defense) from a PRNG key it takes last,
  `logits_fn(x, key)` or `logits_fn(params, x, key)`. It is then called on one example at a time
  (vmapped), example i with its own key (keys[i], as robust_jax's random models draw), so no
  example's draw depends on the other examples of its batch or on the batch size; `samples` > 1
  averages the log-probabilities of draws fold_in(keys[i], j) (EOT), as `model_fns`.
  """
  variables = () if params is None else params
  if params is None:
    call = lambda v, x, *key: logits_fn(x, *key)  # noqa: E731
  else:
    call = lambda v, x, *key: logits_fn(v, x, *key)  # noqa: E731
  if not random:
    def apply(variables, keys=None, samples=1, bpda=False):
      del keys, samples, bpda
      return lambda x: call(variables, x)
    return Target(apply, variables)

  def random_apply(variables, keys=None, samples=1, bpda=False):
    del bpda  # a plain function has no transformation to approximate

    def draw(x, ks):
      return jax.vmap(lambda xi, ki: call(variables, xi[None], ki)[0])(x, ks)

    def fn(x):
      base = model_fns.default_keys(x.shape[0]) if keys is None else keys
      if samples <= 1:
        return draw(x, base)
      return model_fns.eot_mean(lambda kj: draw(x, kj), base, samples)
    return fn

  return Target(random_apply, variables, random=True)
