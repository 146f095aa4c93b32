r"""JPEG compression (Das et al. 2017; Guo, Rana, Cisse & van der Maaten 2018) in front of the
small CNN, Fashion-MNIST, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/jpeg.py --workdir=workdirs/zoo/jpeg

A JPEG round trip at quality 75 (Guo et al.'s setting), written in JAX (8x8 block DCT, the
standard quantisation table scaled by quality, rounding; robust_jax/defenses/jpeg.py), runs
before the network in training (cross-entropy, the default's 3 epochs) and deployment. The
rounding masks the gradient, so `naive` PGD-40 fails; `adaptive` is PGD-40 through BPDA with the
identity (Athalye, Carlini & Wagner 2018; Shin & Song 2017 attack JPEG the same way).
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'jpeg'
  c.defense.quality = 75
  adaptive = evaluation.naive()
  adaptive.bpda = True
  evaluation.zoo(c.eval, adaptive=adaptive, suite='')  # the suite's attacks use no BPDA
  return c
