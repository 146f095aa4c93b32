r"""Standard training (the zoo's baseline): cross-entropy on clean Fashion-MNIST, small CNN.

  python launch.py --config=configs/defenses/standard.py --workdir=workdirs/zoo/standard

Evaluated as every zoo row (configs/evaluation.py): naive PGD-40 and
AutoAttack's standard suite, L-inf eps = 0.1.
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'standard'
  evaluation.zoo(c.eval)
  return c
