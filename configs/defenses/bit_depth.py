r"""Bit-depth reduction (Xu, Evans & Qi 2018, feature squeezing) in front of the small CNN,
Fashion-MNIST, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/bit_depth.py --workdir=workdirs/zoo/bit_depth

The network is trained with cross-entropy on 3-bit inputs (round(x * 7) / 7) for the default's
3 epochs and deployed behind the same rounding. Rounding has a zero gradient almost everywhere,
so `naive` PGD-40 (and the gradient attacks of the AutoAttack suite) see no signal and report a
high accuracy; `adaptive` is the same PGD-40 through BPDA with the identity (Athalye, Carlini &
Wagner 2018), which breaks it. The sanity checks flag the masking: zero input gradients, an
unbounded attack that fails, and no BPDA attack on a non-differentiable transform (the last one
passes because `adaptive` is there).
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'bit_depth'
  c.defense.bits = 3
  adaptive = evaluation.naive()
  adaptive.bpda = True
  evaluation.zoo(c.eval, adaptive=adaptive, suite='')  # the suite's attacks use no BPDA
  return c
