r"""Feature squeezing (Xu, Evans & Qi 2018): a detector in front of the small CNN, Fashion-MNIST,
L-inf eps = 0.1.

  python launch.py --config=configs/defenses/feature_squeezing.py \
      --workdir=workdirs/zoo/feature_squeezing

The classifier is trained like `standard` (cross-entropy, the default's 3 epochs) on all but the
last 1,000 training images; those calibrate the detector (robust_jax/eval/detection.py): an input
is rejected when the L1 distance between the softmax on it and on a squeezed copy (1-bit depth,
2x2 median: Xu et al.'s MNIST squeezers) exceeds the score that 5% of the calibration images
exceed. An example is defended when its clean image is classified right and not rejected, and its
adversarial one is classified right or rejected (a rejected clean image is an error). `naive` is
PGD-40 (CE) on the classifier alone; `adaptive` is PGD-100 with the margin
loss, detector-aware (Carlini & Wagner 2017; He et al. 2017): `detector_penalty` adds
c * relu(score - threshold) to the true-class logit, the gradient reaches through the squeezed
inputs (BPDA with the identity for bit depth). No attack suite: AutoAttack's attacks ignore the
detector.
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'feature_squeezing'
  c.defense.fpr = 0.05                 # false-positive rate on the calibration images
  c.defense.squeeze_bits = 1           # bit-depth squeezer (0: off)
  c.defense.squeeze_median = 2         # median squeezer's window (0: off)
  c.defense.calibration_examples = 1000  # the last training images, kept out of training
  adaptive = default.attack('pgd', eps=0.1, steps=100, step_size=0.01, loss='margin')
  adaptive.detector_penalty = 2.0
  evaluation.zoo(c.eval, adaptive=adaptive, suite='')
  return c
