"""Attacks in stages, so an evaluation can drop the examples whose verdict is settled.

    staged = fab.make_fab_staged(norm='linf', eps=0.1, steps=100, num_targets=9)
    attack = stages.as_attack(staged)            # the whole attack in one jittable function
    carry = staged.init(logits_fn, x, y, keys)   # or, stage by stage, on fewer examples each time:
    for s in range(staged.num_stages(num_classes)):
      carry = staged.stage(logits_fn, x, y, keys, carry, jnp.int32(s))
    staged.done(carry)                           # bool[B]: no later stage changes the verdict
    x_adv = staged.finish(logits_fn, x, y, keys, carry)

A stage is a target of targeted APGD or FAB, or a block of Square's queries. `carry` is a tuple of
per-example arrays (leading axis B), and every function treats each example on its own (per-example
keys, `keys: key[B]`), so running stage s on any subset of the examples, in any batch, gives each
of them the same carry as running it on all. The evaluation (robust_jax/eval/loop.py `run_staged`)
runs each stage only on the examples not yet `done`, re-batched into a few fixed batch sizes;
`as_attack` runs every stage on every example, for training and the plain evaluation path.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from robust_jax.attacks import pgd


class Staged(NamedTuple):
  """An attack split into `num_stages` stages over a per-example carry (see the module doc)."""
  num_stages: Callable[[int], int]  # num_classes -> number of stages
  init: Callable[..., Any]     # (logits_fn, x, y, keys) -> carry
  stage: Callable[..., Any]    # (logits_fn, x, y, keys, carry, s: int32[]) -> carry
  done: Callable[..., Any]     # carry -> bool[B]
  finish: Callable[..., Any]   # (logits_fn, x, y, keys, carry) -> x_adv f32[B,H,W,C]


def as_attack(staged):
  """`attack(logits_fn, x, y, key) -> x_adv`: every stage on every example, in a `fori_loop`."""
  def attack(logits_fn, x, y, key):
    keys = pgd.per_example_keys(key, x.shape[0])
    carry = staged.init(logits_fn, x, y, keys)
    num_stages = staged.num_stages(jax.eval_shape(logits_fn, x).shape[-1])
    if num_stages > 0:
      carry = jax.lax.fori_loop(
          0, num_stages,
          lambda s, c: staged.stage(logits_fn, x, y, keys, c, jnp.asarray(s, jnp.int32)), carry)
    return jax.lax.stop_gradient(staged.finish(logits_fn, x, y, keys, carry))

  return attack
