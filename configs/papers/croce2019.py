r"""Croce, Andriushchenko & Hein 2019, "Provable robustness of ReLU networks via maximization of
linear regions" (AISTATS), Table 1, Fashion-MNIST at L-inf eps 0.1: the plain and adversarially
trained baselines.

  python launch.py --mode=table --config=configs/papers/croce2019.py          # the CPU rows

Rows (`--config=configs/papers/croce2019.py:ROW`):

  fmnist_plain      the Wong et al. MNIST net (`small_cnn`), cross-entropy on clean images; Adam
                    1e-3, /10 after 90% of the epochs, batch 128, 100 epochs. Published: test
                    error 9.50% (90.50% accuracy) and a robust error of at least 96.0% (at most
                    4.0% robust accuracy), the PGD lower bound on the first 1,000 test points.
  fmnist_plain_cpu  10 of the 100 epochs (the lr drop at epoch 9), the same 1,000 test points.
  fmnist_at         the same net and optimiser; every batch is half PGD-40 examples (step
                    2 eps / 40 = 0.005, random start), half clean (defense.adv_fraction 0.5).
                    Published: test error 11.54% (88.46% accuracy), robust error >= 21.5%
                    (<= 78.5% robust accuracy, PGD lower bound).
  fmnist_at_cpu     20 of the 100 epochs, the same 1,000 test points.

Evaluation, on the paper's 1,000 test points: PGD-40 with 10 restarts (step eps / 4) stands in
for their PGD lower bound; AutoAttack's standard suite shows how much a stronger attack lowers
it (the gap is what Croce & Hein 2020 measured on published defenses).
"""

from configs import default
from configs.papers import common

PAPER = 'croce2019'
DEFAULT_ROW = 'fmnist_at_cpu'


def _base(row, title, published, epochs=100):
  c = default.get_config()
  c.model.name = 'small_cnn'
  c.train.batch_size, c.train.epochs = 128, epochs
  c.optim.name, c.optim.learning_rate = 'adam', 1e-3
  c.optim.schedule, c.optim.piecewise_boundaries, c.optim.piecewise_scale = 'piecewise', (0.9,), 0.1
  c.eval.num_examples = 1000
  c.eval.attacks = {'pgd40x10': common.pgd(0.1, 40, 0.025, restarts=10)}
  c.eval.suite = 'standard'
  c.paper = common.fields(
      paper=PAPER, row=row, title=title, epochs=100, published=published,
      labels={'pgd40x10': 'PGD (their lower bound; here PGD-40 x 10, step 0.025)',
              'suite': 'AutoAttack (not in the paper)'},
      source='Croce et al. 2019, Table 1 (Fashion-MNIST, L-inf 0.1, first 1,000 test points)')
  return c


def fmnist_plain():
  c = _base('fmnist_plain', 'Fashion-MNIST, plain training, small_cnn',
            {'clean': 90.50, 'pgd40x10': 4.0})
  c.defense.name = 'standard'
  return c


def fmnist_at():
  c = _base('fmnist_at', 'Fashion-MNIST, 50% PGD-40 AT, small_cnn',
            {'clean': 88.46, 'pgd40x10': 78.5})
  c.defense.name, c.defense.adv_fraction = 'pgd_at', 0.5
  c.train_attack = default.attack('pgd', eps=0.1, steps=40, step_size=2 * 0.1 / 40,
                                  track_best=False)
  return c


def fmnist_plain_cpu():
  return common.cpu_cut(fmnist_plain(), 'fmnist_plain_cpu', epochs=10, examples=1000,
                        cut='10 of 100 epochs')


def fmnist_at_cpu():
  return common.cpu_cut(fmnist_at(), 'fmnist_at_cpu', epochs=20, examples=1000,
                        cut='20 of 100 epochs')


ROWS = {'fmnist_plain': fmnist_plain, 'fmnist_plain_cpu': fmnist_plain_cpu,
        'fmnist_at': fmnist_at, 'fmnist_at_cpu': fmnist_at_cpu}


def get_config(row=DEFAULT_ROW):
  return common.select(ROWS, row, __file__)
