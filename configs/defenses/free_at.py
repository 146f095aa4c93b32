r"""Free adversarial training (Shafahi et al. 2019) on Fashion-MNIST, small CNN, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/free_at.py --workdir=workdirs/free_at

m = 8 replays of each minibatch (Shafahi et al.'s choice on CIFAR-10), the perturbation stepping
eps = 0.1 after each replay and carried across minibatches (robust_jax/defenses/free_at.py).
`train.epochs` is a budget in epochs of standard training that free AT divides by m: 24 gives
24 / 8 = 3 passes over the data, at the cost of 3 epochs of the default PGD-7 AT (8 forward and
backward passes per example each), so the two compare at equal cost. Optimiser and schedule are
the default's (the schedule runs over all 24 epochs' worth of updates). Free AT is single-step
adversarial training, so the catastrophic-overfitting monitor holds out 512 training images and
rolls back to the best epoch if PGD-10 accuracy on them collapses (Wong et al. 2020; the
monitor's PGD-10 follows train_attack's norm and eps). Evaluation:
`naive` PGD-40 (CE), `adaptive` APGD-DLR with 2 restarts, and AutoAttack's standard suite.
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.defense.name = 'free_at'
  c.defense.replays = 8
  # The step after each replay: one FGSM step of eps (Shafahi et al.), no random start.
  c.train_attack = default.attack('fgsm', eps=0.1, steps=1, step_size=0.1, random_start=False,
                                  track_best=False)
  c.train.epochs = 24
  c.train.monitor_examples = 512
  c.train.co_action = 'rollback'
  c.eval.attacks.naive = default.attack('pgd', eps=0.1, steps=40, step_size=0.01)
  c.eval.attacks.adaptive = ml_collections.ConfigDict(dict(
      name='apgd_ce', norm='linf', eps=0.1, steps=100, restarts=2, loss='dlr'))
  c.eval.suite = 'standard'  # all of AutoAttack: APGD-CE, APGD-T, FAB-T, Square
  return c
