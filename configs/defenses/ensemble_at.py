r"""Ensemble adversarial training (Tramer et al. 2018) on Fashion-MNIST, small CNN, eps = 0.1.

First train the two static source models (standard training; a different seed and a different
architecture, as Tramer et al. use pre-trained models unlike the one trained), then this run:

  python launch.py --config=configs/default.py --workdir=workdirs/ensemble_static_small_cnn \
      --config.defense.name=standard --config.seed=1
  python launch.py --config=configs/default.py --workdir=workdirs/ensemble_static_madry_cnn \
      --config.defense.name=standard --config.model.name=madry_cnn --config.seed=2
  python launch.py --config=configs/defenses/ensemble_at.py --workdir=workdirs/ensemble_at

As in the authors' MNIST code: each batch's FGSM examples (eps 0.1, on the source's own predicted
labels) come from a source drawn uniformly among the model being trained and the static models,
and the loss is half clean, half adversarial cross-entropy (robust_jax/defenses/ensemble_at.py).
Epochs and optimiser are the default's. Single-step training can overfit catastrophically, so
the monitor logs PGD-10 accuracy on 512 held-out training images each epoch (co_action 'log':
recorded, not acted on). Evaluation: `naive` PGD-40 (CE), `adaptive` APGD-DLR with 2 restarts,
and AutoAttack; Tramer et al.'s claim concerns transferred (black-box) attacks, which a `transfer`
attack from a held-out model measures.
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.defense.name = 'ensemble_at'
  c.defense.static_models = ('workdirs/ensemble_static_small_cnn,'
                             'workdirs/ensemble_static_madry_cnn')
  c.train_attack = default.attack('fgsm', eps=0.1, steps=1, step_size=0.1, random_start=False,
                                  track_best=False)
  c.train.monitor_examples = 512
  c.train.co_action = 'log'
  c.eval.attacks.naive = default.attack('pgd', eps=0.1, steps=40, step_size=0.01)
  c.eval.attacks.adaptive = ml_collections.ConfigDict(dict(
      name='apgd_ce', norm='linf', eps=0.1, steps=100, restarts=2, loss='dlr'))
  c.eval.suite = 'standard'  # all of AutoAttack: APGD-CE, APGD-T, FAB-T, Square
  return c
