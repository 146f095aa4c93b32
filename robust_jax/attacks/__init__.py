"""Attacks on any JAX function from images in [0,1] to logits.

    from robust_jax import attacks
    attack = attacks.build(dict(name='pgd', norm='linf', eps=0.1, steps=40, step_size=0.01))
    x_adv = attack(logits_fn, x, y, jax.random.key(0))   # x: f32[B,H,W,C] in [0,1], y: int[B]

`build` validates the config and returns `attack(logits_fn, x, y, key) -> x_adv`, which is
jit-compatible (pass `logits_fn` as a static argument or close over it).
"""

from robust_jax.attacks import objectives
from robust_jax.attacks import threat
from robust_jax.attacks.pgd import make_pgd
from robust_jax.attacks.pgd import per_example_keys
from robust_jax.attacks.spec import ATTACKS
from robust_jax.attacks.spec import build
from robust_jax.attacks.spec import build_staged
from robust_jax.attacks.spec import check_inputs
from robust_jax.attacks.spec import describe
from robust_jax.attacks.spec import validate

__all__ = ['ATTACKS', 'build', 'build_staged', 'check_inputs', 'describe', 'make_pgd', 'objectives',
           'per_example_keys', 'threat', 'validate']
