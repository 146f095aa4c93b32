r"""Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards deep learning models resistant to
adversarial attacks" (ICLR): PGD adversarial training on MNIST and CIFAR-10.

  python launch.py --mode=table --config=configs/papers/madry2018.py          # the CPU rows
  python launch.py --mode=table --config=configs/papers/madry2018.py --table_rows=full
  python launch.py --config=configs/papers/madry2018.py:mnist --workdir=workdirs/madry_mnist

Rows (`--config=configs/papers/madry2018.py:ROW`):

  mnist       the MNIST challenge model (github.com/MadryLab/mnist_challenge, config.json):
              conv5x5-32, pool, conv5x5-64, pool, fc1024, fc10 (`madry_cnn`); PGD-40, step 0.01,
              random start, eps 0.3, adversarial examples only; Adam 1e-4, batch 50, 100,000
              steps (~83 epochs; batch 50 needs 1, 2, 5 or 10 devices: on 4 or 8 override
              train.batch_size). Published: 98.5% clean, 89.62% under PGD-100 with 50
              restarts (the challenge's white-box leaderboard); AutoAttack 88.50% (Croce & Hein
              2020).
  mnist_cpu   the same training for 2,500 steps (2.5% of it, 2.1 epochs), evaluated on the
              first 1,000 test images with PGD-100 x 2 restarts and APGD-CE + APGD-T.
  cifar10     the CIFAR-10 challenge model: WRN-34-10, PGD-7, step 2/255, eps 8/255 (the
              released config.json uses 10 steps; the paper 7); SGD 0.1, momentum 0.9, weight
              decay 2e-4, batch 128, 80,000 steps, lr /10 at 40k and 60k; crop + flip.
              Published 87.3% clean, 45.8% under PGD-20; AutoAttack 44.04% (Croce & Hein 2020,
              on the challenge model).
  cifar10_cpu 20 training steps, 100 test images, PGD-20: a smoke run of the protocol (CIFAR-10
              needs TFDS with network once; WRN-34-10 is ~20 GFLOP per image-step).
"""

from configs import default
from configs.papers import common

PAPER = 'madry2018'
DEFAULT_ROW = 'mnist_cpu'


def mnist():
  c = common.mnist(default.get_config())
  c.model.name = 'madry_cnn'
  c.defense.name = 'pgd_at'
  c.train_attack = default.attack('pgd', eps=0.3, steps=40, step_size=0.01, track_best=False)
  c.train.batch_size, c.train.steps = 50, 100_000
  c.optim.name, c.optim.learning_rate, c.optim.schedule = 'adam', 1e-4, 'constant'
  c.checkpoint.every_steps = 5000
  c.eval.attacks = {'pgd100x50': common.pgd(0.3, 100, 0.01, restarts=50)}
  c.eval.suite = 'standard'
  c.paper = common.fields(
      paper=PAPER, row='mnist', title='MNIST, PGD-40 AT, madry_cnn', epochs=83,
      published={'clean': 98.5, 'pgd100x50': 89.62, 'suite': 88.50},
      labels={'pgd100x50': 'PGD-100 x 50 restarts, step 0.01',
              'suite': 'AutoAttack (Croce & Hein 2020)'},
      source='Madry et al. 2018 and the mnist_challenge leaderboard; AutoAttack: Croce & Hein '
             '2020')
  return c


def mnist_cpu():
  c = mnist()
  return common.cpu_cut(
      c, 'mnist_cpu', steps=2500, examples=1000, suite='apgd',
      attacks={'pgd100x50': common.pgd(0.3, 100, 0.01, restarts=2)},
      cut='2,500 of 100,000 steps; first 1,000 test images; PGD-100 x 2 restarts (not 50); '
          'APGD-CE + APGD-T for AutoAttack')


def cifar10():
  c = common.cifar10(default.get_config())
  c.model.name, c.model.depth, c.model.width = 'wide_resnet', 34, 10
  c.defense.name = 'pgd_at'
  c.train_attack = default.attack('pgd', eps=8 / 255, steps=7, step_size=2 / 255,
                                  track_best=False)
  c.train.batch_size, c.train.steps = 128, 80_000
  common.sgd(c, 0.1, 2e-4, boundaries=(0.5, 0.75))
  c.checkpoint.every_steps = 2000
  c.eval.attacks = {'pgd20': common.pgd(8 / 255, 20, 2 / 255)}
  c.eval.suite = 'standard'
  c.eval.batch_size = 200
  c.paper = common.fields(
      paper=PAPER, row='cifar10', title='CIFAR-10, PGD-7 AT, WRN-34-10', epochs=205,
      published={'clean': 87.3, 'pgd20': 45.8, 'suite': 44.04},
      labels={'pgd20': 'PGD-20, step 2/255', 'suite': 'AutoAttack (Croce & Hein 2020)'},
      source='Madry et al. 2018; AutoAttack: Croce & Hein 2020 (the challenge model)')
  return c


def cifar10_cpu():
  return common.cpu_cut(cifar10(), 'cifar10_cpu', steps=20, examples=100, suite='',
                        cut='20 of 80,000 steps (a smoke run); first 100 test images; no suite')


ROWS = {'mnist': mnist, 'mnist_cpu': mnist_cpu, 'cifar10': cifar10, 'cifar10_cpu': cifar10_cpu}


def get_config(row=DEFAULT_ROW):
  return common.select(ROWS, row, __file__)
