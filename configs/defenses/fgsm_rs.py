r"""'Fast' adversarial training: FGSM, random start (Wong et al. 2020), Fashion-MNIST, eps 0.1.

  python launch.py --config=configs/defenses/fgsm_rs.py --workdir=workdirs/fgsm_rs

Wong et al.'s MNIST recipe (train_mnist.py: eps 0.3, step 0.375 = 1.25 eps, Adam, cyclic learning
rate 0 -> 5e-3 at 2/5 of training -> 0, 10 epochs, this small CNN) at eps = 0.1: FGSM step 0.125 =
1.25 eps. The batch stays the default's 128 (Wong: 100), which divides over 1, 2, 4 or 8 devices.
train_attack is the FGSM-RS attack itself: one FGSM step of 0.125 from a uniform random start in
the eps-ball (robust_jax/defenses/training_attack.py). Catastrophic overfitting (PGD accuracy on
training data collapsing within an epoch; a smaller train_attack.step_size, e.g. 1.0 * eps,
avoids it) is watched as Wong et al. do: PGD-10 accuracy on 512 held-out training images every
epoch (the monitor's attack follows train_attack's norm and eps, with a step of eps / 4), and a
drop of more than 0.2 below the best ends training with the best epoch's weights (co_action
'rollback'; training/monitor.py). Evaluation: `naive` PGD-40 (CE), `adaptive` APGD-DLR with 2
restarts, and AutoAttack's standard suite.
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.defense.name = 'fgsm_rs'
  c.train_attack = default.attack('fgsm', eps=0.1, steps=1, step_size=1.25 * 0.1,
                                  random_start=True, track_best=False)
  c.train.epochs = 10
  c.optim.name = 'adam'
  c.optim.learning_rate = 5e-3
  c.optim.schedule = 'cyclic'
  c.optim.cyclic_peak = 0.4
  c.train.monitor_examples = 512
  c.train.co_action = 'rollback'
  c.train.co_drop = 0.2
  c.eval.attacks.naive = default.attack('pgd', eps=0.1, steps=40, step_size=0.01)
  c.eval.attacks.adaptive = ml_collections.ConfigDict(dict(
      name='apgd_ce', norm='linf', eps=0.1, steps=100, restarts=2, loss='dlr'))
  c.eval.suite = 'standard'  # all of AutoAttack: APGD-CE, APGD-T, FAB-T, Square
  return c
