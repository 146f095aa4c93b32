r"""Gowal, Qin, Uesato, Mann & Kohli 2020, "Uncovering the limits of adversarial training against
norm-bounded adversarial examples" (arXiv 2010.03593): TRADES on DeepMind's Swish WRN-70-16,
with and without 500k unlabeled images of 80M Tiny Images, weight averaging (EMA); CIFAR-10,
L-inf 8/255.

  python launch.py --mode=table --config=configs/papers/gowal2020.py              # CPU cuts
  python launch.py --config=configs/papers/gowal2020.py:cifar10_wrn70_16_extra \
      --config.data.extra.path=<ti_500k.npz> --workdir=...                         # GPU

Rows (`--config=configs/papers/gowal2020.py:ROW`), the recipe of configs/papers/common.py
`modern_recipe` (shared/PAPERS.md, DeepMind's released JAX code: batch 1024, 400 epochs, TRADES
beta 6 with 10 steps, EMA 0.995, 70% extra data per batch, label smoothing 0.1, cosine lr after
10 warm-up epochs, weight decay 5e-4; lr 0.4 = 0.1 per 256 images, assumed):

  cifar10_wrn70_16          no extra data. Published (RobustBench): 85.29% clean, 57.20%
                            AutoAttack. The paper's settings for this row (epochs, smoothing)
                            are taken as the extra-data recipe's: check before comparing.
  cifar10_wrn70_16_extra    + 500k unlabeled 80M Tiny Images with pseudo-labels (Carmon et al.
                            2019's set), 70% of every batch: needs --config.data.extra.path (an
                            npz with `image` uint8[N,32,32,3] and `label`, the pseudo-labels).
                            Published: 91.10% clean, 65.88% AutoAttack.
  *_cpu                     WRN-10-1, 40 steps of 64, first 200 test images, PGD-20; the extra
                            row's cut mixes in SYNTHETIC images (noisy copies of CIFAR-10
                            training images), not the paper's data. Smoke runs of the pipeline.

Not reproduced: DeepMind's BatchNorm statistics per emulated worker; their unlabeled set is
drawn with replacement where robust_jax walks a permutation.
"""

from configs.papers import common

PAPER = 'gowal2020'
DEFAULT_ROW = 'cifar10_wrn70_16_extra_cpu'
SOURCE = ('Gowal et al. 2020 (RobustBench entries Gowal2020Uncovering_70_16 and '
          '_70_16_extra); recipe: shared/PAPERS.md')


def _row(row, title, extra_fraction, published):
  return common.modern_row(PAPER, SOURCE, row, title, published, depth=70, width=16,
                           batch_size=1024, epochs=400, lr=0.4, beta=6.0,
                           extra_fraction=extra_fraction)


def cifar10_wrn70_16():
  return _row('cifar10_wrn70_16', 'CIFAR-10, TRADES, WRN-70-16 Swish, no extra data', 0.0,
              {'clean': 85.29, 'suite': 57.20})


def cifar10_wrn70_16_extra():
  return _row('cifar10_wrn70_16_extra', 'CIFAR-10, TRADES, WRN-70-16 Swish, + 500k 80M-TI '
              '(70% of each batch)', 0.7, {'clean': 91.10, 'suite': 65.88})


def cifar10_wrn70_16_cpu():
  return common.modern_cpu_cut(cifar10_wrn70_16(), 'cifar10_wrn70_16_cpu')


def cifar10_wrn70_16_extra_cpu():
  return common.modern_cpu_cut(cifar10_wrn70_16_extra(), 'cifar10_wrn70_16_extra_cpu')


ROWS = {'cifar10_wrn70_16': cifar10_wrn70_16, 'cifar10_wrn70_16_extra': cifar10_wrn70_16_extra,
        'cifar10_wrn70_16_cpu': cifar10_wrn70_16_cpu,
        'cifar10_wrn70_16_extra_cpu': cifar10_wrn70_16_extra_cpu}


def get_config(row=DEFAULT_ROW):
  return common.select(ROWS, row, __file__)
