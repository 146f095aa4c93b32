r"""Median smoothing (Xu, Evans & Qi 2018, feature squeezing) in front of the small CNN,
Fashion-MNIST, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/median.py --workdir=workdirs/zoo/median

A 3x3 median filter (Xu et al. use 2x2 and 3x3 on MNIST-sized images) runs before the network in
training (cross-entropy, the default's 3 epochs) and deployment. The median is differentiable
almost everywhere, but its gradient reaches only one pixel of each window, so naive gradients are
sparse and weak; `adaptive` is PGD-40 through BPDA with the identity (Athalye, Carlini & Wagner
2018 call this family "local smoothing" and attack it this way).
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'median'
  c.defense.kernel_size = 3
  adaptive = evaluation.naive()
  adaptive.bpda = True
  evaluation.zoo(c.eval, adaptive=adaptive, suite='')  # the suite's attacks use no BPDA
  return c
