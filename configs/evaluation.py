"""The defense zoo's evaluation protocol (robust_jax/zoo.py), shared by configs/defenses/*.

    c.eval = evaluation.zoo(c.eval)                       # naive PGD-40 + APGD-CE/APGD-T
    c.eval = evaluation.zoo(c.eval, adaptive=attack(...))  # + the defense's adaptive attack

`naive` is PGD-40 with cross-entropy, L-inf eps 0.1, step 0.01 and a random start, through the
model's own gradients (no BPDA, no EOT): what an evaluation that does not adapt to the defense
would report. `adaptive` is the attack that tests the defense (BPDA, EOT, margin/DLR losses, a
detector-aware loss); the suite is AutoAttack's two gradient attacks, APGD-CE and APGD-T
(`apgd`), as a cascade: on our Fashion-MNIST models FAB-T and Square added nothing after them
(RESULTS.md) at several times their cost on CPU; `--config.eval.suite=standard` runs all four.
"""

import ml_collections

from configs import default


def naive(norm='linf', eps=0.1):
  step = 0.01 if norm == 'linf' else 2.5 * eps / 40
  return default.attack('pgd', norm=norm, eps=eps, steps=40, step_size=step)


def zoo(eval_cfg, adaptive=None, suite='apgd', norm='linf', eps=0.1):
  attacks = {'naive': naive(norm, eps)}
  if adaptive is not None:
    attacks['adaptive'] = adaptive
  eval_cfg.attacks = ml_collections.ConfigDict(attacks)
  eval_cfg.suite = suite
  eval_cfg.suite_norm = norm
  eval_cfg.suite_eps = eps
  return eval_cfg
