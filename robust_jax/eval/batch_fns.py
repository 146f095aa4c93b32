"""The jitted per-batch functions of a robust evaluation: attack a batch and score the points it
returns (`make_eval_fn`), or run one stage of an attack in stages (`make_staged_eval_fns`).

    fn = make_eval_fn(model, dict(name='pgd', norm='linf', eps=0.1, steps=20), mesh)
    correct, outside = fn(params, batch_stats, images_uint8, labels, index, key)

Each example's attack randomness is a function of (key, example index) (`rng.example_keys`), and
the model is attacked and scored in inference mode (`loop.BN_MODE`), so no example's result
depends on the other examples of its batch. robust.py runs these through the evaluation loop.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from robust_jax import attacks
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax.attacks import threat
from robust_jax.eval import loop

_SLACK = 1e-5  # relative float tolerance of the ball check
BN_MODE = loop.BN_MODE


def _attack_view(model, params, batch_stats, spec, index, key):
  """(logits_fn as the attack sees the model, per-example attack keys) for a batch of examples."""
  # A random model's draws during the attack: their own stream, per example (EOT averages
  # eot_samples of them per step); the final prediction (`_score`) draws afresh.
  seen = model_fns.eot_logits_fn(model, params, batch_stats, BN_MODE,
                                 rng.example_keys(key, rng.MODEL_UNDER_ATTACK, index),
                                 spec['eot_samples'], bpda=spec['bpda'])
  return seen, rng.example_keys(key, rng.ATTACK, index)


def _score(model, params, batch_stats, spec, x, x_adv, labels, index, key):
  """(correct, outside), bool[B] each: the model's verdict on the returned points, and the points
  outside their eps-ball or [0,1]."""
  logits = model_fns.logits_fn(model, params, batch_stats, BN_MODE,
                               keys=rng.example_keys(key, rng.MODEL, index))(x_adv)
  flat = x_adv.reshape(x.shape[0], -1)
  outside = (flat.min(1) < 0) | (flat.max(1) > 1)
  if spec is not None:
    bound = spec['eps'] * (1 + _SLACK) + 1e-6
    outside = outside | (threat.distance(x_adv, x, spec['norm']) > bound)
  return jnp.argmax(logits, -1) == labels, outside


# params, batch_stats, images, labels, index, key
_BATCH = (P(), P(), P('data'), P('data'), P('data'), P())


def make_eval_fn(model, attack_cfg, mesh):
  """Jitted `fn(params, batch_stats, images, labels, index, key) -> (correct, outside)`.

  `attack_cfg` None means clean accuracy. `index: int32[B]` is each example's test-set index.
  `correct: bool[B]` is computed on the returned points; `outside: bool[B]` flags returned points
  outside their eps-ball or [0,1].
  """
  spec = None if attack_cfg is None else attacks.validate(attack_cfg)
  attack = None if attack_cfg is None else attacks.build(attack_cfg, load_model=run_io.load_model)

  def per_device(params, batch_stats, images, labels, index, key):
    x = images.astype(jnp.float32) / 255.0
    x_adv = x
    if attack is not None:
      seen, keys = _attack_view(model, params, batch_stats, spec, index, key)
      x_adv = attack(seen, x, labels, keys)
    return _score(model, params, batch_stats, spec, x, x_adv, labels, index, key)

  return jax.jit(parallel.per_device(per_device, mesh, in_specs=_BATCH,
                                     out_specs=(P('data'), P('data'))))


class StagedEvalFns(NamedTuple):
  """An attack in stages for the evaluation (`loop.run_staged`)."""
  num_stages: Any   # num_classes -> int
  carry: Any        # (params, batch_stats, images, labels, index, key) -> the carry's shapes
  step: Any         # jitted (..., carry tuple, s: int32[]) -> (*carry, done, correct, outside)


def make_staged_eval_fns(model, attack_cfg, mesh):
  """`StagedEvalFns` for an attack that runs in stages (`attacks.build_staged`), else None.

  `step` with s = 0 starts the attack, with s >= 1 runs stage s - 1 (a `lax.cond`, so one
  program per batch size), and scores the points the carry stands for, as `make_eval_fn` does.
  """
  staged = attacks.build_staged(attack_cfg)
  if staged is None:
    return None
  spec = attacks.validate(attack_cfg)

  def view(params, batch_stats, images, index, key):
    return (images.astype(jnp.float32) / 255.0,
            *_attack_view(model, params, batch_stats, spec, index, key))

  def init(params, batch_stats, images, labels, index, key):
    x, seen, keys = view(params, batch_stats, images, index, key)
    return staged.init(seen, x, labels, keys)

  def step(params, batch_stats, images, labels, index, key, carry, s):
    x, seen, keys = view(params, batch_stats, images, index, key)
    carry = jax.lax.cond(s == 0, lambda c: staged.init(seen, x, labels, keys),
                         lambda c: staged.stage(seen, x, labels, keys, c, s - 1), tuple(carry))
    x_adv = jax.lax.stop_gradient(staged.finish(seen, x, labels, keys, carry))
    return (*carry, staged.done(carry),
            *_score(model, params, batch_stats, spec, x, x_adv, labels, index, key))

  data = P('data')
  return StagedEvalFns(
      staged.num_stages, lambda *a: jax.eval_shape(jax.jit(init), *a),
      jax.jit(parallel.per_device(step, mesh, _BATCH + (data, P()), data)))
