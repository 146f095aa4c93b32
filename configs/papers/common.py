"""Shared pieces of the paper configs (configs/papers/<paper>.py): plain values only.

Every table config (these, and configs/zoo.py) defines PAPER (the table's name), ROWS (row name
-> function returning the row's ConfigDict) and `get_config(row)`; optionally LAYOUT ('paper',
the default, or 'zoo') and WORKDIRS (where its runs go; default workdirs/papers/<PAPER>). A row's
config carries `paper`, which robust_jax/tables/ reads to run the rows and, for the paper
layout, back from the run's results.json to print the table:

  paper.paper / row / title   which paper and row; the row's one-line title
  paper.scale                 'full' (the published protocol) or 'cpu' (the same protocol cut
                              down to run on a 2-core CPU in under an hour; `paper.cut` says how)
  paper.of                    for a 'cpu' row, the 'full' row it is a cut of
  paper.epochs                epochs of the published run
  paper.published             metric -> published accuracy in %: 'clean', an eval.attacks name,
                              'suite' (eval.suite's accuracy) or 'best_<metric>' (the best
                              epoch's weights, train.co_action='best'; so no eval.attacks name
                              starts with 'best_')
  paper.labels                metric -> what the paper measured it with
  paper.source                where the published figures come from
  paper.needs                 a row whose workdir this one uses (a distillation teacher), or
                              several, comma-separated (ensemble members); they run first
  paper.needs_field           the config field that takes their workdirs, comma-separated
                              (default defense.teacher)
  paper.prerequisite          (zoo) True: a row that others need, run but not shown
  paper.note                  (zoo) a word after the row's name in the table
  paper.passes                (zoo) passes over the training data; train.epochs follows it
"""

import ml_collections
from ml_collections import config_dict

from configs import default


def pgd(eps, steps, step_size, restarts=1, loss='ce'):
  return default.attack('pgd', eps=eps, steps=steps, step_size=step_size, restarts=restarts,
                        loss=loss)


def fields(*, paper, row, title, source, epochs, published, labels, scale='full', of='',
           needs='', cut=''):
  return ml_collections.ConfigDict(dict(
      paper=paper, row=row, title=title, scale=scale, of=of, epochs=epochs, source=source,
      published=ml_collections.ConfigDict(published), labels=ml_collections.ConfigDict(labels),
      needs=needs, cut=cut))


def cpu_cut(c, row, *, cut, epochs=None, steps=None, examples=1000, suite=None, attacks=None):
  """Turns full row config `c` into its CPU-sized cut `row` (same protocol, less of it).

  epochs / steps: the shorter training (the schedule keeps its shape over it); examples: the
  first N test images; suite: a cheaper attack suite ('apgd': AutoAttack's two gradient
  attacks); attacks: eval.attacks replacing the published ones (fewer restarts). `cut` says all
  of this in words, for the table.
  """
  c.paper.of, c.paper.row, c.paper.scale, c.paper.cut = c.paper.row, row, 'cpu', cut
  if epochs is not None:
    c.train.epochs, c.train.steps = epochs, 0
  if steps is not None:
    c.train.steps = steps
  c.eval.num_examples = examples
  if suite is not None:
    c.eval.suite = suite
  if attacks is not None:
    c.eval.attacks = ml_collections.ConfigDict(attacks)
  c.eval.sanity_examples = min(c.eval.sanity_examples, examples)
  return c


def mnist(c):
  """MNIST, L-inf eps 0.3 (the papers' threat model); the IDX files from scripts/fetch_mnist.sh.

  The [0,1] pixels go into the network as they are (model.normalize=False), as in Madry's,
  Wong's and TRADES' code (Carlini & Wagner's [-0.5, 0.5] is the same up to the first layer's
  bias).
  """
  c.data.name = 'mnist'
  c.model.normalize = False
  c.eval.suite_norm, c.eval.suite_eps = 'linf', 0.3
  return c


def cifar10(c, eps=8 / 255):
  """CIFAR-10, pad-4 crop + flip, L-inf eps 8/255.

  Read offline from `data.source_dir` (the official python version or the png copy; a checkout
  with ../shared/datasets/cifar10 beside it finds that copy without flags), else through TFDS
  with network once (robust_jax/data/sources.py).
  """
  c.data.name = 'cifar10'
  c.data.random_crop = c.data.random_flip = True
  c.eval.suite_norm, c.eval.suite_eps = 'linf', eps
  return c


def sgd(c, lr, weight_decay, momentum=0.9, nesterov=False, schedule='piecewise',
        boundaries=(0.5, 0.75)):
  o = c.optim
  o.name, o.learning_rate, o.weight_decay, o.momentum, o.nesterov = (
      'sgd', lr, weight_decay, momentum, nesterov)
  o.schedule, o.piecewise_boundaries, o.piecewise_scale = schedule, tuple(boundaries), 0.1
  return c


def select(rows, row, path):
  if row not in rows:
    raise ValueError(f'{path}: no row {row!r}; rows: {", ".join(rows)}.')
  return rows[row]()


def modern_recipe(c, *, depth, width, batch_size, epochs, lr, beta, extra_fraction,
                  label_smoothing=0.1, ema_decay=0.995, weight_decay=5e-4, warmup_epochs=10):
  """The modern recipe on CIFAR-10, L-inf 8/255 (Gowal et al. 2020/2021, Rebuffi et al. 2021,
  Wang et al. 2023): DeepMind's Swish WideResNet (mean/std inside), TRADES with a 10-step
  inner attack of step 2/255, label smoothing, EMA weights (evaluated), SGD with Nesterov
  momentum 0.9 on a cosine schedule after a linear warm-up, crop + flip; AutoAttack and PGD-40.

  extra_fraction > 0: that share of every batch comes from additional data, whose path the
  row leaves unset (the papers' data is not shipped): it fails until given
  --config.data.extra.path (robust_jax/data/extra.py).
  """
  c = cifar10(c)
  c.model.name, c.model.depth, c.model.width, c.model.activation = (
      'dm_wide_resnet', depth, width, 'swish')
  c.defense.name, c.defense.beta, c.defense.label_smoothing = 'trades', beta, label_smoothing
  c.train_attack = default.attack('pgd', eps=8 / 255, steps=10, step_size=2 / 255,
                                  track_best=False)
  c.train.batch_size, c.train.epochs = batch_size, epochs
  sgd(c, lr, weight_decay, nesterov=True, schedule='cosine')
  c.optim.warmup_epochs, c.optim.ema_decay = warmup_epochs, ema_decay
  c.data.extra.fraction = extra_fraction
  c.data.extra.path = config_dict.placeholder(str) if extra_fraction else ''
  c.eval.attacks = ml_collections.ConfigDict({'pgd40': pgd(8 / 255, 40, 2 / 255)})
  c.eval.suite = 'standard'
  c.eval.batch_size = 500
  return c


def modern_row(paper, source, row, title, published, *, preact=False, **recipe):
  """A published row of the modern recipe: `modern_recipe(default config, **recipe)` (a
  PreAct ResNet-18 at full width where `preact`), with its table fields (AutoAttack as
  RobustBench reports it)."""
  c = modern_recipe(default.get_config(), **recipe)
  if preact:
    c.model.name, c.model.base_width = 'preact_resnet18', 64
  c.paper = fields(paper=paper, row=row, title=title, epochs=recipe['epochs'],
                   published=published, labels={'suite': 'AutoAttack (RobustBench)'},
                   source=source)
  return c


def modern_cpu_cut(c, row, *, steps=40, batch_size=64, synthetic=4000, examples=200):
  """A CPU cut of a `modern_recipe` row: the same recipe on a WRN-10-1 (dm_wide_resnet, depth
  10, width 1; a PreAct ResNet-18 row: base_width 8) for `steps` steps of `batch_size`, the
  warm-up the same share of training, EMA decay 0.9 (0.995 would keep the EMA weights near
  their initialisation over so few steps), PGD-20 on the first `examples` test images and no
  suite. Extra data, where the row takes some: `synthetic` SYNTHETIC images (noisy copies of
  CIFAR-10 training images, made here), NOT the paper's generated or unlabeled data."""
  full = c.paper.row
  real_epochs = c.train.epochs
  preact = c.model.name == 'preact_resnet18'
  model = 'PreAct ResNet-18 at 1/8 width' if preact else 'WRN-10-1'
  warmup_share = c.optim.warmup_epochs / real_epochs
  extra = f'; extra data: {synthetic:,} SYNTHETIC images (noisy copies of CIFAR-10 training ' \
          "images), not the paper's" if c.data.extra.fraction else ''
  c = cpu_cut(c, row, steps=steps, examples=examples, suite='',
              attacks={'pgd20': pgd(8 / 255, 20, 2 / 255)},
              cut=f'{model}, {steps} steps of {batch_size} (not {real_epochs} epochs of '
                  f'{c.train.batch_size}), EMA 0.9; first {examples} test images, PGD-20, no '
                  f'AutoAttack{extra} (a smoke run)')
  assert c.paper.of == full
  c.model.depth, c.model.width, c.model.base_width = 10, 1, 8 if preact else 64
  c.train.batch_size = batch_size
  c.optim.ema_decay = 0.9
  # The warm-up keeps its share of training (an epoch: 50,000 // batch_size steps).
  c.optim.warmup_epochs = warmup_share * steps / (50_000 // batch_size)
  if c.data.extra.fraction:
    c.data.extra.path, c.data.extra.synthetic = '', synthetic
  c.eval.batch_size = 200
  return c
