r"""Thermometer encoding (Buckman, Roy, Raffel & Goodfellow 2018) in front of the small CNN,
Fashion-MNIST, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/thermometer.py --workdir=workdirs/zoo/thermometer

Each pixel becomes 16 binary channels (1[x >= j/16], j = 0..15; the paper's 16 levels) and the
network, whose first convolution takes the 16 channels, is trained with plain cross-entropy for
the default's 3 epochs. (Buckman et al. also train adversarially with their LS-PGA attack; this
config is the non-adversarial variant, the one whose robustness is pure gradient masking.) The
code is piecewise constant, so `naive` PGD-40 sees zero gradients; `adaptive` is PGD-40 through
BPDA with a soft thermometer code (Athalye, Carlini & Wagner 2018), which breaks it.
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'thermometer'
  c.defense.levels = 16
  adaptive = evaluation.naive()
  adaptive.bpda = True
  evaluation.zoo(c.eval, adaptive=adaptive, suite='')  # the suite's attacks use no BPDA
  return c
