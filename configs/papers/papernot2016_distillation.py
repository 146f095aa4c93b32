r"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami 2016, IEEE S&P) and its break by
Carlini & Wagner 2017 ("Towards evaluating the robustness of neural networks", IEEE S&P): a
gradient-masking demonstration on MNIST.

  python launch.py --mode=table --config=configs/papers/papernot2016_distillation.py

Rows (`--config=configs/papers/papernot2016_distillation.py:ROW`):

  mnist_teacher      SmallCNN (`trades_cnn`: conv3-32, conv3-32, pool, conv3-64, conv3-64, pool,
                     fc200, dropout 0.5, fc200, fc10) trained with the softmax at T = 100 on clean
                     MNIST; SGD 0.01, Nesterov momentum 0.9, batch 128, 50 epochs (Carlini &
                     Wagner's train_models.py; inputs there are in [-0.5, 0.5], here [0, 1]
                     normalised by the model, which changes nothing an attack in pixel space sees).
  mnist_student      the same net trained at T = 100 on the teacher's soft labels, tested at
                     T = 1. Papernot et al. reported their attack's success falling from ~95% to
                     below 0.5% (JSMA, not run here); Carlini & Wagner's attacks succeed on 100%.
                     Evaluated at L-inf eps 0.3: `naive` PGD-40 on the cross-entropy (its softmax
                     saturates, the gradients vanish: the masking), `margin` PGD-100 on the
                     C&W margin, `apgd_dlr` APGD with the scale-invariant DLR loss, `cw` the C&W
                     L2 attack without a radius (its success rate is what Carlini & Wagner
                     report) and `cw_r2` the same within L2 radius 2.0; the per-example worst
                     case over all of them. Both C&W rows run with Carlini & Wagner's settings,
                     `cw_l2`'s defaults: 9 values of c from 1e-3, up to 1,000 Adam steps (lr
                     0.01) for each with abort early, kappa 0, on the logits.
  mnist_teacher_cpu, mnist_student_cpu   the same with 10 of the 50 epochs each, evaluated on
                     the first 1,000 test images; the student's CPU row runs C&W once, without a
                     radius (its success rate is the published figure): with Carlini & Wagner's
                     settings one C&W pass over 1,000 images takes ~1.5 h on 2 CPU cores.
"""

import ml_collections

from configs import default
from configs.papers import common

PAPER = 'papernot2016_distillation'
DEFAULT_ROW = 'mnist_student_cpu'
TEACHER_DIR = 'workdirs/papers/papernot2016_distillation/'


def _base(row, title, teacher, published, labels):
  c = common.mnist(default.get_config())
  c.model.name = 'trades_cnn'
  c.defense.name, c.defense.temperature = 'distillation', 100.0
  c.defense.teacher = TEACHER_DIR + teacher if teacher else ''
  c.train.batch_size, c.train.epochs = 128, 50
  common.sgd(c, 0.01, 0.0, nesterov=True, schedule='constant')
  c.eval.attacks = ml_collections.ConfigDict({
      'naive': common.pgd(0.3, 40, 0.01),
      'margin': common.pgd(0.3, 100, 0.01, restarts=2, loss='margin'),
      'apgd_dlr': ml_collections.ConfigDict(dict(name='apgd_ce', norm='linf', eps=0.3,
                                                 steps=100, restarts=1, loss='dlr')),
      # Carlini & Wagner's settings are cw_l2's defaults (9 x up to 1,000 steps). They are not
      # written out: the sanity checks take the attack with the most steps x restarts written
      # in the config as their L-inf primary attack, which must stay the margin PGD.
      'cw': ml_collections.ConfigDict(dict(name='cw_l2', norm='l2', eps=float('inf'))),
      'cw_r2': ml_collections.ConfigDict(dict(name='cw_l2', norm='l2', eps=2.0)),
  })
  c.eval.suite = ''
  c.paper = common.fields(
      paper=PAPER, row=row, title=title, epochs=50, published=published, labels=labels,
      needs=teacher, source='Papernot et al. 2016; Carlini & Wagner 2017')
  return c


_LABELS = {'naive': 'PGD-40 on the cross-entropy (what distillation was tuned against)',
           'margin': 'PGD-100 x 2 on the C&W margin', 'apgd_dlr': 'APGD-DLR',
           'cw': 'C&W L2 (9 values of c x up to 1,000 steps), unbounded (Carlini & Wagner: '
                 '100% success)',
           'cw_r2': 'C&W L2 within radius 2.0'}


def mnist_teacher():
  c = _base('mnist_teacher', 'MNIST, distillation teacher (T = 100), trades_cnn', '', {},
            {'naive': _LABELS['naive']})
  c.eval.attacks = {'naive': c.eval.attacks.naive}  # a prerequisite: cheap evaluation
  c.eval.sanity_checks = False
  return c


def mnist_student():
  return _base('mnist_student', 'MNIST, distilled student (T = 100, tested at 1), trades_cnn',
               'mnist_teacher', {'cw': 0.0}, _LABELS)


def mnist_teacher_cpu():
  return common.cpu_cut(mnist_teacher(), 'mnist_teacher_cpu', epochs=10, examples=1000,
                        cut='10 of 50 epochs; first 1,000 test images')


def mnist_student_cpu():
  c = common.cpu_cut(mnist_student(), 'mnist_student_cpu', epochs=10, examples=1000,
                     cut='10 of 50 epochs (teacher and student); first 1,000 test images; '
                     'C&W without a radius only')
  c.paper.needs = 'mnist_teacher_cpu'
  c.defense.teacher = TEACHER_DIR + 'mnist_teacher_cpu'
  del c.eval.attacks['cw_r2']  # the same C&W search again, only thresholded at radius 2.0
  del c.paper.labels['cw_r2']
  return c


ROWS = {'mnist_teacher': mnist_teacher, 'mnist_student': mnist_student,
        'mnist_teacher_cpu': mnist_teacher_cpu, 'mnist_student_cpu': mnist_student_cpu}


def get_config(row=DEFAULT_ROW):
  return common.select(ROWS, row, __file__)
