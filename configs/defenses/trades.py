r"""TRADES (Zhang et al. 2019) on Fashion-MNIST, small CNN, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/trades.py --workdir=workdirs/trades

beta = 6 and 10 inner steps, as TRADES' CIFAR-10 setting (eps 0.031, 10 steps of 0.007, i.e.
~0.23 eps a step), scaled to eps = 0.1: 10 steps of 0.02 (0.2 eps a step, 2 eps in all), starting
at x + 0.001 * N(0,1). (TRADES' own MNIST script uses eps 0.3, 40 steps of 0.01 and beta 1.) The
model, optimiser and epochs are the default's, so the result compares with PGD-AT in
configs/default.py. train_attack is TRADES' inner loop: its norm, eps, steps and step_size; its
random_start stands for TRADES' start at x + 0.001 * N(0,1) and its loss 'ce' for the KL term
(robust_jax/defenses/training_attack.py).
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'trades'
  c.defense.beta = 6.0
  c.train_attack = default.attack('pgd', eps=0.1, steps=10, step_size=0.02, random_start=True,
                                  track_best=False)
  evaluation.zoo(c.eval)  # naive PGD-40 + AutoAttack's standard suite (the zoo's protocol)
  return c
