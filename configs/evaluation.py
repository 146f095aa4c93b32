"""The defense zoo's evaluation protocol (configs/zoo.py), shared by configs/defenses/*.

    c.eval = evaluation.zoo(c.eval)                       # naive PGD-40 + AutoAttack
    c.eval = evaluation.zoo(c.eval, adaptive=attack(...))  # + the defense's adaptive attack

`naive` is PGD-40 with cross-entropy, L-inf eps 0.1, step 0.01 and a random start, through the
model's own gradients (no BPDA, no EOT): what an evaluation that does not adapt to the defense
would report. `adaptive` is the attack that tests the defense (BPDA, EOT, margin/DLR losses, a
detector-aware loss); the suite is AutoAttack's `standard` one (APGD-CE, APGD-T, FAB-T, Square)
as a cascade. Every adversarially trained model gets all four: FAB-T and Square break points the
two APGD attacks miss (RESULTS.md: up to 67 points on FGSM-RS models), so a cheaper suite would
overstate robustness. Defenses whose gradients the suite cannot use (BPDA/EOT transforms, the
detector) set suite='' and rely on their adaptive attack; their tables say the figure is an upper
bound from the attacks that ran.
"""

import ml_collections

from configs import default


def naive(norm='linf', eps=0.1):
  step = 0.01 if norm == 'linf' else 2.5 * eps / 40
  return default.attack('pgd', norm=norm, eps=eps, steps=40, step_size=step)


def zoo(eval_cfg, adaptive=None, suite='standard', norm='linf', eps=0.1):
  attacks = {'naive': naive(norm, eps)}
  if adaptive is not None:
    attacks['adaptive'] = adaptive
  eval_cfg.attacks = ml_collections.ConfigDict(attacks)
  eval_cfg.suite = suite
  eval_cfg.suite_norm = norm
  eval_cfg.suite_eps = eps
  return eval_cfg
