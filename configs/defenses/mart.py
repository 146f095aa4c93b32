r"""MART (Wang et al. 2020) on Fashion-MNIST, small CNN, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/mart.py --workdir=workdirs/mart

lambda (defense.beta) = 6 and 10 PGD-CE steps, as MART's CIFAR-10 setting (eps 0.031, 10 steps of
0.007, i.e. ~0.23 eps a step), scaled to eps = 0.1: 10 steps of 0.02, last iterate. The PGD starts
uniformly in the ball (MART's code starts at x + 0.001 * N(0,1)). The model, optimiser and epochs
are the default's, so the result compares with PGD-AT in configs/default.py.
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'mart'
  c.defense.beta = 6.0
  c.train_attack = default.attack('pgd', eps=0.1, steps=10, step_size=0.02, track_best=False)
  evaluation.zoo(c.eval)  # naive PGD-40 + AutoAttack's standard suite (the zoo's protocol)
  return c
