r"""An ensemble of three standard-trained small CNNs averaging their logits, Fashion-MNIST,
L-inf eps = 0.1. Nothing is trained here: train the members first, then evaluate the average.

  for s in 1 2 3; do
    python launch.py --config=configs/defenses/standard.py \
        --workdir=workdirs/ensemble_member_$s --config.seed=$s
  done
  python launch.py --config=configs/defenses/ensemble.py --workdir=workdirs/ensemble

(`python launch.py --mode=table --config=configs/zoo.py --table_rows=ensemble` does the same
under workdirs/zoo/.) The members are any workdirs of trained runs on the same dataset,
comma-separated in `defense.members`; each is rebuilt from its own config.json, so architectures
may differ. `defense.combine='probs'`
averages probabilities instead (the model outputs the log of the average). Averaging models that
are each broken by PGD does not make them robust when the attack differentiates the whole
ensemble (He et al. 2017), which is what every attack here does: `naive` PGD-40 (CE),
`adaptive` APGD-DLR (100 steps; DLR does not depend on the scale of the averaged outputs), and
AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square).
"""

import ml_collections

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'ensemble'
  c.defense.members = ','.join(f'workdirs/ensemble_member_{s}' for s in (1, 2, 3))
  c.defense.combine = 'logits'   # 'logits' | 'probs'
  adaptive = ml_collections.ConfigDict(dict(name='apgd_ce', norm='linf', eps=0.1, steps=100,
                                            loss='dlr'))
  evaluation.zoo(c.eval, adaptive=adaptive)
  return c
