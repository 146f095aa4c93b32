"""The jitted per-batch functions of a robust evaluation: attack a batch and score the points it
returns (`target_eval_fn`), or run one stage of an attack in stages (`make_staged_eval_fns`).

    t = target.of_flax(model, params, batch_stats)
    fn = target_eval_fn(t.apply, dict(name='pgd', norm='linf', eps=0.1, steps=20), mesh)
    correct, outside = fn(t.variables, images, labels, index, key)

`apply` is a `target.Target`'s (the model in inference mode, `loop.BN_MODE`). Each example's attack
randomness is a function of (key, example index) (`rng.example_keys`), so no example's result
depends on the other examples of its batch. robust.py runs these through the evaluation loop.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from robust_jax import attacks
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax import xla_flags
from robust_jax.attacks import threat
from robust_jax.eval import target as target_lib

_SLACK = 1e-5  # relative float tolerance of the ball check


def unit_images(images, xp=np):
  """Images as f32 in [0,1]: uint8 ones divided by 255, float ones as they are (in f32)."""
  x = images.astype(xp.float32)
  return x / 255.0 if images.dtype == np.uint8 else x


def _attack_view(apply, variables, spec, index, key):
  """(logits_fn as the attack sees the model, per-example attack keys) for a batch of examples."""
  # A random model's draws during the attack: their own stream, per example (EOT averages
  # eot_samples of them per step); the final prediction (`_score`) draws afresh.
  seen = apply(variables, rng.example_keys(key, rng.MODEL_UNDER_ATTACK, index),
               spec['eot_samples'], bpda=spec['bpda'])
  return seen, rng.example_keys(key, rng.ATTACK, index)


def _score(apply, variables, spec, x, x_adv, labels, index, key):
  """(correct, outside), bool[B] each: the model's verdict on the returned points, and the points
  outside their eps-ball or [0,1]."""
  logits = apply(variables, keys=rng.example_keys(key, rng.MODEL, index))(x_adv)
  flat = x_adv.reshape(x.shape[0], -1)
  outside = (flat.min(1) < 0) | (flat.max(1) > 1)
  if spec is not None:
    bound = spec['eps'] * (1 + _SLACK) + 1e-6
    outside = outside | (threat.distance(x_adv, x, spec['norm']) > bound)
  return jnp.argmax(logits, -1) == labels, outside


# variables, images, labels, index, key
_BATCH = (P(), P('data'), P('data'), P('data'), P())


def target_eval_fn(apply, attack_cfg, mesh):
  """Jitted `fn(variables, images, labels, index, key) -> (correct, outside)`.

  `attack_cfg` None means clean accuracy. `images`: uint8 (0..255) or floats in [0,1].
  `index: int32[B]` is each example's test-set index. `correct: bool[B]` is computed on the
  returned points; `outside: bool[B]` flags returned points outside their eps-ball or [0,1].
  """
  spec = None if attack_cfg is None else attacks.validate(attack_cfg)
  attack = None if attack_cfg is None else attacks.build(attack_cfg, load_model=run_io.load_model)

  def per_device(variables, images, labels, index, key):
    x = unit_images(images, jnp)
    x_adv = x
    if attack is not None:
      seen, keys = _attack_view(apply, variables, spec, index, key)
      x_adv = attack(seen, x, labels, keys)
    return _score(apply, variables, spec, x, x_adv, labels, index, key)

  return jax.jit(parallel.per_device(per_device, mesh, in_specs=_BATCH,
                                     out_specs=(P('data'), P('data'))),
                 compiler_options=xla_flags.program_options(spec and spec['name']))


def make_eval_fn(model, attack_cfg, mesh):
  """Jitted `fn(params, batch_stats, images, labels, index, key) -> (correct, outside)` of a
  robust_jax model: `target_eval_fn` of `target.of_flax(model, ...)`."""
  fn = target_eval_fn(target_lib.of_flax(model, None, None).apply, attack_cfg, mesh)
  return lambda params, batch_stats, *args: fn((params, batch_stats), *args)


class StagedEvalFns(NamedTuple):
  """An attack in stages for the evaluation (`loop.run_staged`)."""
  num_stages: Any   # num_classes -> int
  carry: Any        # (variables, images, labels, index, key) -> the carry's shapes
  step: Any         # jitted (..., carry tuple, s: int32[]) -> (*carry, done, correct, outside)


def make_staged_eval_fns(apply, attack_cfg, mesh):
  """`StagedEvalFns` for an attack that runs in stages (`attacks.build_staged`), else None.

  `step` with s = 0 starts the attack, with s >= 1 runs stage s - 1 (a `lax.cond`, so one
  program per batch size), and scores the points the carry stands for, as `target_eval_fn` does.
  """
  staged = attacks.build_staged(attack_cfg)
  if staged is None:
    return None
  spec = attacks.validate(attack_cfg)

  def view(variables, images, index, key):
    return (unit_images(images, jnp), *_attack_view(apply, variables, spec, index, key))

  def init(variables, images, labels, index, key):
    x, seen, keys = view(variables, images, index, key)
    return staged.init(seen, x, labels, keys)

  def step(variables, images, labels, index, key, carry, s):
    x, seen, keys = view(variables, images, index, key)
    carry = jax.lax.cond(s == 0, lambda c: staged.init(seen, x, labels, keys),
                         lambda c: staged.stage(seen, x, labels, keys, c, s - 1), tuple(carry))
    x_adv = jax.lax.stop_gradient(staged.finish(seen, x, labels, keys, carry))
    return (*carry, staged.done(carry),
            *_score(apply, variables, spec, x, x_adv, labels, index, key))

  data = P('data')
  return StagedEvalFns(
      staged.num_stages, lambda *a: jax.eval_shape(jax.jit(init), *a),
      jax.jit(parallel.per_device(step, mesh, _BATCH + (data, P()), data),
              compiler_options=xla_flags.program_options(spec['name'])))
