r"""The defense zoo as a table config: every defense of configs/defenses/, trained on Fashion-MNIST
and evaluated with its adaptive attack, one row each.

  python launch.py --mode=table --config=configs/zoo.py                   # run what is missing
  python launch.py --mode=table --config=configs/zoo.py --table_jobs=2    # two rows at a time
  python launch.py --mode=table --config=configs/zoo.py --table_rows=trades,mart
  python launch.py --mode=table --config=configs/zoo.py --table_run=false # the table alone
  python launch.py --config=configs/zoo.py:pgd_at --workdir=workdirs/zoo/pgd_at  # one row
  # RESULTS.md's table: one pass over the data, the first 500 test images
  python launch.py --mode=table --config=configs/zoo.py --table_jobs=2 \
      --config.paper.passes=1 --config.eval.num_examples=500 --config.eval.sanity_examples=100

Each row is its configs/defenses/ config evaluated on the first 1,000 test images
(`eval.num_examples`; 0 = all), run in workdirs/zoo/<row> after the rows it needs: the
distillation student after its teacher, the ensemble after its three members, ensemble AT after
the first two members as its static models. Those prerequisites (`paper.prerequisite`) are
standard-trained runs evaluated cheaply (naive PGD only, no suite, no sanity checks) and are not
rows of the table. robust_jax/tables/ renders the table (layout 'zoo'): clean accuracy, the
naive PGD (`eval.attacks.naive`), the adaptive attack (`eval.attacks.adaptive`, or the attack
suite where there is none), the per-example worst case, the sanity checks, training time and the
code version of each row's results.json, with the command of each row.

`paper.passes` is the length of training in passes over the training data: `train.epochs` follows
it (free AT's `train.epochs` is passes x `defense.replays`, its budget in epochs of standard
training). Its default is each config's own length.
"""

import ml_collections

from configs.defenses import awp
from configs.defenses import bit_depth
from configs.defenses import distillation
from configs.defenses import distillation_teacher
from configs.defenses import ensemble
from configs.defenses import ensemble_at
from configs.defenses import feature_squeezing
from configs.defenses import fgsm_rs
from configs.defenses import free_at
from configs.defenses import gaussian_noise
from configs.defenses import jpeg
from configs.defenses import mart
from configs.defenses import median
from configs.defenses import pgd_at
from configs.defenses import random_resize
from configs.defenses import standard
from configs.defenses import thermometer
from configs.defenses import trades
from configs.papers import common

PAPER = 'zoo'
LAYOUT = 'zoo'  # robust_jax/tables/: the defense table, not published-vs-measured
WORKDIRS = 'workdirs/zoo'
DEFAULT_ROW = 'pgd_at'
EXAMPLES = 1000
MEMBERS = ('ensemble_member_1', 'ensemble_member_2', 'ensemble_member_3')


def _row(defense, name, note='', needs=(), needs_field='defense.teacher', prerequisite=False,
         replayed=False):
  """`defense`'s config as row `name` (needs: the rows whose workdirs go in `needs_field`;
  replayed: its train.epochs is a budget of passes x defense.replays, as free AT's)."""
  c = defense.get_config()
  c.eval.num_examples = EXAMPLES
  c.paper = ml_collections.ConfigDict(dict(
      paper=PAPER, row=name, title=f'{name} ({note})' if note else name, scale='cpu', note=note,
      needs=','.join(needs), needs_field=needs_field, prerequisite=prerequisite,
      passes=c.train.epochs))
  if needs:
    *head, leaf = needs_field.split('.')
    node = c
    for p in head:
      node = node[p]
    node[leaf] = ','.join(f'{WORKDIRS}/{n}' for n in needs)
  if replayed:
    replays = c.defense.replays
    assert c.train.epochs % replays == 0, (name, c.train.epochs, replays)
    c.paper.passes = c.train.epochs // replays
    c.train.epochs = c.paper.get_ref('passes') * c.defense.get_ref('replays')
  else:
    c.train.epochs = c.paper.get_ref('passes') * 1
  return c


def _cheap(c):
  """A prerequisite's evaluation: naive PGD only."""
  c.eval.suite, c.eval.sanity_checks = '', False
  return c


def _member(seed):
  def member():
    c = _cheap(_row(standard, f'ensemble_member_{seed}', prerequisite=True))
    c.seed = seed
    return c
  return member


# In table order, each row after the rows it needs.
ROWS = {
    'standard': lambda: _row(standard, 'standard', note='baseline'),
    'pgd_at': lambda: _row(pgd_at, 'pgd_at'),
    'fgsm_rs': lambda: _row(fgsm_rs, 'fgsm_rs'),
    'free_at': lambda: _row(free_at, 'free_at', replayed=True),
    'trades': lambda: _row(trades, 'trades'),
    'mart': lambda: _row(mart, 'mart'),
    'awp': lambda: _row(awp, 'awp'),
    'distillation_teacher': lambda: _cheap(_row(distillation_teacher, 'distillation_teacher',
                                                prerequisite=True)),
    'distillation': lambda: _row(distillation, 'distillation', needs=['distillation_teacher']),
    **{m: _member(s) for s, m in enumerate(MEMBERS, 1)},
    'ensemble': lambda: _row(ensemble, 'ensemble', needs=MEMBERS,
                             needs_field='defense.members'),
    'ensemble_at': lambda: _row(ensemble_at, 'ensemble_at', needs=MEMBERS[:2],
                                needs_field='defense.static_models'),
    'random_resize': lambda: _row(random_resize, 'random_resize'),
    'gaussian_noise': lambda: _row(gaussian_noise, 'gaussian_noise', note='randomised smoothing'),
    'bit_depth': lambda: _row(bit_depth, 'bit_depth'),
    'thermometer': lambda: _row(thermometer, 'thermometer'),
    'median': lambda: _row(median, 'median'),
    'jpeg': lambda: _row(jpeg, 'jpeg'),
    'feature_squeezing': lambda: _row(feature_squeezing, 'feature_squeezing', note='detector'),
}


def get_config(row=DEFAULT_ROW):
  return common.select(ROWS, row, __file__)
