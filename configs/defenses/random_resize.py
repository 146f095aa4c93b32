r"""Random resizing and padding (Xie, Wang, Zhang, Ren & Yuille 2018) in front of the small CNN,
Fashion-MNIST, L-inf eps = 0.1.

  python launch.py --config=configs/defenses/random_resize.py --workdir=workdirs/zoo/random_resize

Each input is resized (bilinear) to r x r with r uniform in {22, ..., 28} and put at a random
offset on a black 28 x 28 canvas, a fresh draw per example and per call, in training
(cross-entropy, the default's 3 epochs) and deployment. Xie et al. enlarge 299 -> [299, 331) and
pad to 331; we shrink so the network keeps its input size (robust_jax/defenses/transforms.py).
The model is random: `naive` PGD-40 follows single-draw gradients; `adaptive` averages them over
20 draws a step (EOT, Athalye, Carlini & Wagner 2018), and no suite (AutoAttack's `rand`,
APGD-CE and APGD-DLR with EOT, costs ~10x). Every prediction, the final one included, takes a fresh
draw.
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'random_resize'
  c.defense.min_size = 22
  adaptive = evaluation.naive()
  adaptive.eot_samples = 20
  evaluation.zoo(c.eval, adaptive=adaptive, suite='')  # suite='rand': APGD with EOT, ~10x the cost
  return c
