r"""Wong, Rice & Kolter 2020, "Fast is better than free: revisiting adversarial training" (ICLR):
FGSM adversarial training from a uniform random start (FGSM-RS), with early stopping against
catastrophic overfitting.

  python launch.py --mode=table --config=configs/papers/wong2020_fast.py      # the CPU rows
  python launch.py --config=configs/papers/wong2020_fast.py:mnist_fgsm_rs

Rows (`--config=configs/papers/wong2020_fast.py:ROW`):

  mnist_fgsm_rs      github.com/locuslab/fast_adversarial, MNIST/train_mnist.py: the
                     conv(16,4x4,s2,p1), conv(32,4x4,s2,p1), fc100, fc10 net (`small_cnn`); FGSM
                     from a uniform start in the eps-ball, eps 0.3, step 0.375, the gradient
                     taken at the unclipped x + delta (defense.fgsm_clip_start=False) and raw
                     [0,1] inputs, as in that script; Adam, batch 100, 10 epochs, cyclic lr
                     0 -> 5e-3 (peak at 2/5) -> 0. Published: 98.50% clean,
                     88.77% under PGD-50 x 10 restarts (step 0.01); AutoAttack 82.93% (Croce &
                     Hein 2020). Catastrophic overfitting (PGD accuracy collapsing to ~0 within an
                     epoch, seed-dependent) is watched as the authors advise, with PGD-10 on 512
                     held-out training images each epoch; a collapse rolls back to the best epoch
                     (robust_jax/training/monitor.py).
  mnist_fgsm_rs_cpu  the same training (10 epochs run on a CPU in minutes), evaluated on the
                     first 1,000 test images: PGD-50 x 10 and the full AutoAttack suite.
  cifar10_fgsm_rs    MNIST's recipe's CIFAR-10 counterpart (CIFAR10/train_fgsm.py): PreAct
                     ResNet-18, eps 8/255, step 10/255, SGD momentum 0.9, weight decay 5e-4, batch
                     128, 15 epochs, cyclic lr 0 -> 0.2 -> 0, crop + flip. Published 83.81% /
                     46.06% (PGD-50 x 10, step 2/255); AutoAttack 43.21%. The authors trained
                     in mixed precision (apex O2); this runs float32 (or model.dtype=bfloat16).
  cifar10_fgsm_rs_cpu  the same recipe on a PreAct ResNet-18 at 1/8 width (base_width 8), 6 of the
                     15 epochs (the cyclic schedule over 6), the first 1,000 test images, PGD-50 x 1
                     and the full AutoAttack suite; about an hour on 2 CPU cores.
  cifar10_co_cpu     catastrophic overfitting on CIFAR-10: cifar10_fgsm_rs_cpu with FGSM step
                     16/255 (2 eps), the step at which the paper's Figure 3 shows FGSM-RS training
                     collapse; the monitor (PGD-10 on 512 held-out training images each epoch)
                     catches a collapse and rolls back to the best epoch's weights (co_action
                     'rollback'); the table shows whether and when it happened.
  fmnist_fgsm_rs_cpu Wong et al.'s MNIST recipe on Fashion-MNIST at eps 0.1, step 1.25 eps = 0.125
                     (no published figures: Fashion-MNIST was not in the paper).
  fmnist_co_cpu      the same with step 2 eps = 0.2 and co_action 'log': training goes on
                     through catastrophic overfitting, which the monitor records (the epoch, the
                     PGD accuracy before and after); the final model is then evaluated as it is.
  fmnist_co_rollback_cpu  the same run with co_action 'rollback': training stops at the collapse
                     and keeps the weights of the best epoch.
"""

from configs import default
from configs.papers import common

PAPER = 'wong2020_fast'
DEFAULT_ROW = 'mnist_fgsm_rs_cpu'


def _fgsm_rs(c, eps, step, monitor_step, co_action='rollback'):
  c.defense.name = 'fgsm_rs'
  c.train_attack = default.attack('fgsm', eps=eps, steps=1, step_size=step, random_start=True,
                                  track_best=False)
  c.train.monitor_examples = 512
  c.train.monitor_attack = default.attack('pgd', eps=eps, steps=10, step_size=monitor_step)
  c.train.co_action, c.train.co_drop = co_action, 0.2
  return c


def mnist_fgsm_rs():
  c = _fgsm_rs(common.mnist(default.get_config()), 0.3, 0.375, 0.075)
  c.defense.fgsm_clip_start = False  # train_mnist.py: the gradient at the unclipped x + delta
  c.model.name = 'small_cnn'
  c.train.batch_size, c.train.epochs = 100, 10
  c.optim.name, c.optim.learning_rate = 'adam', 5e-3
  c.optim.schedule, c.optim.cyclic_peak = 'cyclic', 0.4
  c.eval.attacks = {'pgd50x10': common.pgd(0.3, 50, 0.01, restarts=10)}
  c.eval.suite = 'standard'
  c.paper = common.fields(
      paper=PAPER, row='mnist_fgsm_rs', title='MNIST, FGSM-RS (step 0.375), small_cnn',
      epochs=10, published={'clean': 98.50, 'pgd50x10': 88.77, 'suite': 82.93},
      labels={'pgd50x10': 'PGD-50 x 10 restarts, step 0.01',
              'suite': 'AutoAttack (Croce & Hein 2020)'},
      source='Wong et al. 2020 (MNIST); AutoAttack: Croce & Hein 2020')
  return c


def mnist_fgsm_rs_cpu():
  return common.cpu_cut(mnist_fgsm_rs(), 'mnist_fgsm_rs_cpu', examples=1000,
                        cut='all 10 epochs; first 1,000 test images')


def cifar10_fgsm_rs():
  c = _fgsm_rs(common.cifar10(default.get_config()), 8 / 255, 10 / 255, 2 / 255)
  c.model.name = 'preact_resnet18'
  c.train.batch_size, c.train.epochs = 128, 15
  common.sgd(c, 0.2, 5e-4, schedule='cyclic')
  c.optim.cyclic_peak = 0.4
  c.eval.attacks = {'pgd50x10': common.pgd(8 / 255, 50, 2 / 255, restarts=10)}
  c.eval.suite = 'standard'
  c.eval.batch_size = 500
  c.paper = common.fields(
      paper=PAPER, row='cifar10_fgsm_rs', title='CIFAR-10, FGSM-RS (step 10/255), PreAct '
      'ResNet-18', epochs=15, published={'clean': 83.81, 'pgd50x10': 46.06, 'suite': 43.21},
      labels={'pgd50x10': 'PGD-50 x 10 restarts, step 2/255',
              'suite': 'AutoAttack (Croce & Hein 2020)'},
      source='Wong et al. 2020 (CIFAR-10); AutoAttack: Croce & Hein 2020')
  return c


def cifar10_fgsm_rs_cpu():
  # The CPU model: PreAct ResNet-18 at 1/8 of its width (BENCHMARKS.md, "A CPU-sized CIFAR-10
  # model": 298 training img/s and 980 PGD img-steps/s on 2 cores, so 6 epochs and the full
  # suite on the 1,000 test images fit about an hour). Wong's cyclic schedule over 6 epochs.
  c = common.cpu_cut(
      cifar10_fgsm_rs(), 'cifar10_fgsm_rs_cpu', epochs=6, examples=1000,
      attacks={'pgd50x10': common.pgd(8 / 255, 50, 2 / 255)},
      cut='PreAct ResNet-18 at 1/8 width (base_width 8); 6 of 15 epochs; the first 1,000 test '
      'images; PGD-50 x 1 restart')
  c.model.base_width = 8
  return c


def cifar10_co_cpu():
  c = cifar10_fgsm_rs_cpu()
  c.train_attack.step_size = 16 / 255
  c.paper.row, c.paper.published = 'cifar10_co_cpu', {}
  c.paper.cut += '; FGSM step 16/255 (the paper\'s row: 10/255)'
  c.paper.title = 'CIFAR-10, FGSM-RS step 16/255 (catastrophic overfitting), rollback'
  c.paper.source = 'Wong et al. 2020, Figure 3 (FGSM-RS step sizes), on the CPU model'
  return c


def _fmnist(row, step, co_action, title):
  c = _fgsm_rs(default.get_config(), 0.1, step, 0.025, co_action=co_action)
  c.model.name = 'small_cnn'
  c.train.batch_size, c.train.epochs = 100, 10
  c.optim.name, c.optim.learning_rate = 'adam', 5e-3
  c.optim.schedule, c.optim.cyclic_peak = 'cyclic', 0.4
  c.eval.num_examples = 1000
  c.eval.attacks = {'pgd50x10': common.pgd(0.1, 50, 0.01, restarts=10)}
  c.eval.suite = 'standard'
  c.paper = common.fields(
      paper=PAPER, row=row, title=title, epochs=10, published={}, scale='cpu',
      labels={'pgd50x10': 'PGD-50 x 10 restarts, step 0.01', 'suite': 'AutoAttack'},
      source='not in the paper: its MNIST recipe at eps 0.1 on Fashion-MNIST',
      cut='all 10 epochs; first 1,000 test images')
  return c


def fmnist_fgsm_rs_cpu():
  return _fmnist('fmnist_fgsm_rs_cpu', 0.125, 'rollback', 'Fashion-MNIST, FGSM-RS step 1.25 eps')


def fmnist_co_cpu():
  return _fmnist('fmnist_co_cpu', 0.2, 'log', 'Fashion-MNIST, FGSM-RS step 2 eps, no early stop')


def fmnist_co_rollback_cpu():
  return _fmnist('fmnist_co_rollback_cpu', 0.2, 'rollback',
                 'Fashion-MNIST, FGSM-RS step 2 eps, early stop')


ROWS = {'mnist_fgsm_rs': mnist_fgsm_rs, 'mnist_fgsm_rs_cpu': mnist_fgsm_rs_cpu,
        'cifar10_fgsm_rs': cifar10_fgsm_rs, 'cifar10_fgsm_rs_cpu': cifar10_fgsm_rs_cpu,
        'cifar10_co_cpu': cifar10_co_cpu,
        'fmnist_fgsm_rs_cpu': fmnist_fgsm_rs_cpu, 'fmnist_co_cpu': fmnist_co_cpu,
        'fmnist_co_rollback_cpu': fmnist_co_rollback_cpu}


def get_config(row=DEFAULT_ROW):
  return common.select(ROWS, row, __file__)
