r"""PGD adversarial training (Madry et al. 2018), the default recipe, evaluated as a zoo row.

  python launch.py --config=configs/defenses/pgd_at.py --workdir=workdirs/zoo/pgd_at

Training as configs/default.py (PGD-7, step 0.035, L-inf eps = 0.1, 3 epochs of Adam); the
evaluation is the zoo's (configs/evaluation.py): naive PGD-40 and
AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square).
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  evaluation.zoo(c.eval)
  return c
