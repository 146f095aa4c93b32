r"""Defensive distillation, step 2: the student (Papernot et al. 2016), Fashion-MNIST, small CNN.

  python launch.py --config=configs/defenses/distillation_teacher.py \
      --workdir=workdirs/distillation_teacher
  python launch.py --config=configs/defenses/distillation.py --workdir=workdirs/distillation

The student, of the teacher's architecture, learns the teacher's soft labels softmax(z / T) at
T = 100 (cross-entropy of its own softmax at T), and is deployed at T = 1. It needs the teacher's
run (the first command) in workdirs/distillation_teacher. Its robustness to the `naive` PGD-40
on the cross-entropy is gradient masking; the `adaptive` PGD-100 on the margin loss (2 restarts)
and AutoAttack's standard suite show what is left.
"""

from configs.defenses import distillation_teacher


def get_config():
  c = distillation_teacher.get_config()
  c.defense.teacher = 'workdirs/distillation_teacher'
  return c
