r"""Defensive distillation, step 1: the teacher (Papernot et al. 2016), Fashion-MNIST, small CNN.

  python launch.py --config=configs/defenses/distillation_teacher.py \
      --workdir=workdirs/distillation_teacher

Cross-entropy of softmax(logits / T) at T = 100 (Papernot et al.'s MNIST value) on clean
training images; deployed at T = 1. configs/defenses/distillation.py then trains the student on
this run's soft labels. The teacher alone already masks gradients (its logits are ~T times too
large for the softmax at T = 1), so its evaluation has the same two attacks as the student's:
`naive` PGD-40 on the cross-entropy (eps 0.1, step 0.01), whose gradients vanish, and `adaptive`
PGD-100 on the margin loss (Carlini & Wagner 2017), 2 restarts, which does not care about the
logits' scale; plus AutoAttack (its DLR loss is scale invariant too).
"""

from configs import default


def get_config():
  c = default.get_config()
  c.defense.name = 'distillation'
  c.defense.temperature = 100.0
  c.defense.teacher = ''
  c.eval.attacks.naive = default.attack('pgd', eps=0.1, steps=40, step_size=0.01)
  c.eval.attacks.adaptive = default.attack('pgd', eps=0.1, steps=100, step_size=0.01, restarts=2,
                                           loss='margin')
  c.eval.suite = 'standard'
  return c
