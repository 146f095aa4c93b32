r"""Gaussian noise augmentation and randomised smoothing (Cohen, Rosenfeld & Kolter 2019; Lecuyer
et al. 2019) with the small CNN on Fashion-MNIST, L2 eps = 1.0.

  python launch.py --config=configs/defenses/gaussian_noise.py \
      --workdir=workdirs/zoo/gaussian_noise

Training adds N(0, sigma^2 I) noise, sigma = 0.5, to every input (cross-entropy, the default's 3
epochs); the deployed model adds a fresh draw to every input, so it is random and attacked in its
own threat model, L2 eps = 1.0: `naive` is PGD-40 (step 2.5 * eps / 40) on single draws,
`adaptive` the same with EOT over 20 draws; no suite (AutoAttack's `rand`, APGD with EOT,
costs ~10x).

The trained network is also the base classifier of the smoothed classifier, which is certified on
the first 500 test images (robust_jax/eval/certify.py): n0 = 100 selection and n = 10,000
estimation draws per image, alpha = 0.001, certified accuracy at L2 radii 0 .. 2 in
results['certify'] and certified_accuracy.png. sigma = 0.5 rather than 0.25 because with
n = 10,000 the largest radius any image can get is sigma * Phi^-1(0.001^(1/10000)) = 3.2 sigma,
so sigma = 0.25 could certify nothing beyond 0.8 < eps. Cost: 5.05 M noisy forward passes, about
6 minutes at the 15,000 images/s measured on a 2-core CPU shared with other jobs (n is
`eval.certify.n`; Cohen et al. use 100,000).
"""

from configs import default
from configs import evaluation


def get_config():
  c = default.get_config()
  c.defense.name = 'gaussian_noise'
  c.defense.sigma = 0.5
  adaptive = evaluation.naive('l2', 1.0)
  adaptive.eot_samples = 20
  evaluation.zoo(c.eval, adaptive=adaptive, suite='', norm='l2', eps=1.0)  # 'rand': ~10x cost
  c.eval.certify.examples = 500
  c.eval.certify.n = 10_000
  return c
