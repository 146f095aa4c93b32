r"""AWP (Wu, Xia & Wang 2020) on PGD-AT, Fashion-MNIST, small CNN, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/awp.py --workdir=workdirs/awp

The default PGD-AT (7 steps of 0.035, last iterate) with adversarial weight perturbation of
relative size gamma = 5e-3 (the paper's value) from the first step (the authors' PGD-AT-AWP has no
warm-up; for TRADES-AWP use --config.defense.awp_base=trades --config.defense.awp_warmup=...,
their script waits 10 of 200 epochs). Model, optimiser and epochs are the default's, so the
result compares with configs/default.py; AWP costs one more forward and backward pass a step.
Evaluation: `naive` PGD-40 (CE), `adaptive` APGD-DLR with 2 restarts, and AutoAttack's
standard suite.
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.defense.name = 'awp'
  c.defense.awp_base = 'pgd_at'
  c.defense.awp_gamma = 5e-3
  c.defense.awp_warmup = 0.0
  c.eval.attacks.naive = default.attack('pgd', eps=0.1, steps=40, step_size=0.01)
  c.eval.attacks.adaptive = ml_collections.ConfigDict(dict(
      name='apgd_ce', norm='linf', eps=0.1, steps=100, restarts=2, loss='dlr'))
  c.eval.suite = 'standard'  # all of AutoAttack: APGD-CE, APGD-T, FAB-T, Square
  return c
