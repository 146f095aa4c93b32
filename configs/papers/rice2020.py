r"""Rice, Wong & Kolter 2020, "Overfitting in adversarially robust deep learning" (ICML): robust
overfitting of PGD adversarial training, and early stopping on a validation set as the remedy.

  python launch.py --mode=table --config=configs/papers/rice2020.py --table_rows=full

Rows (`--config=configs/papers/rice2020.py:ROW`):

  cifar10_pgd10      github.com/locuslab/robust_overfitting, train_cifar.py: PreAct ResNet-18,
                     PGD-10, step 2/255, eps 8/255; SGD 0.1, momentum 0.9, weight decay 5e-4,
                     batch 128, 200 epochs, lr /10 at 50% and 75%; crop + flip. 1,000 training
                     images are held out as the validation set; PGD-10 accuracy on them each
                     epoch picks the best checkpoint (train.co_action='best'), which evaluation
                     reports beside the final weights. Published: PGD robust accuracy 53.49% for
                     the best checkpoint (epoch 106) against 45.59% at the end of training.
  cifar10_pgd10_cpu  the same protocol on a PreAct ResNet-18 at 1/8 width (base_width 8, the
                     CPU model of BENCHMARKS.md) for 2 of the 200 epochs (lr /10 after epochs 1
                     and 1.5), the better of the 2 epochs by PGD-10 on the 1,000 held-out
                     training images, evaluated on the first 1,000 test images with PGD-10 and
                     the full AutoAttack suite; about an hour on 2 CPU cores. Far too short to
                     overfit: it runs the early-stopping protocol, it cannot show the gap.
"""

from configs import default
from configs.papers import common

PAPER = 'rice2020'
DEFAULT_ROW = 'cifar10_pgd10_cpu'


def cifar10_pgd10():
  c = common.cifar10(default.get_config())
  c.model.name = 'preact_resnet18'
  c.defense.name = 'pgd_at'
  c.train_attack = default.attack('pgd', eps=8 / 255, steps=10, step_size=2 / 255,
                                  track_best=False)
  c.train.batch_size, c.train.epochs = 128, 200
  common.sgd(c, 0.1, 5e-4, boundaries=(0.5, 0.75))
  c.train.monitor_examples = 1000
  c.train.monitor_attack = default.attack('pgd', eps=8 / 255, steps=10, step_size=2 / 255)
  c.train.co_action, c.train.co_drop = 'best', 1.0
  c.eval.attacks = {'pgd10': common.pgd(8 / 255, 10, 2 / 255)}
  c.eval.suite = ''
  c.eval.batch_size = 500
  c.paper = common.fields(
      paper=PAPER, row='cifar10_pgd10', title='CIFAR-10, PGD-10 AT, PreAct ResNet-18, early '
      'stopping', epochs=200, published={'best_pgd10': 53.49, 'pgd10': 45.59},
      labels={'best_pgd10': 'PGD-10, best checkpoint (epoch 106)',
              'pgd10': 'PGD-10, final checkpoint (epoch 200)'},
      source='Rice et al. 2020 (PreAct ResNet-18, CIFAR-10, L-inf)')
  return c


def cifar10_pgd10_cpu():
  c = common.cpu_cut(
      cifar10_pgd10(), 'cifar10_pgd10_cpu', epochs=2, examples=1000, suite='standard',
      cut='PreAct ResNet-18 at 1/8 width (base_width 8); 2 of 200 epochs (too short to '
      'overfit); the first 1,000 test images; AutoAttack added')
  c.model.base_width = 8
  return c

ROWS = {'cifar10_pgd10': cifar10_pgd10, 'cifar10_pgd10_cpu': cifar10_pgd10_cpu}


def get_config(row=DEFAULT_ROW):
  return common.select(ROWS, row, __file__)
