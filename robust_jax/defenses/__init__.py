"""Training objectives and facets of the defenses, chosen by `config.defense.name`.

A defense is a pair of pure functions, used by the training step on each device's shard:

  perturb(logits_fn, x, y, keys) -> x_adv
      the adversarial inputs (gradients stopped); `logits_fn` is the model as attacks see it,
      `keys` one PRNG key per example.
  loss(forward, x, x_adv, onehot) -> (per_example_loss f32[B], logits f32[B,K], new_batch_stats)
      `forward(v) -> (logits, new_batch_stats)` is the training-mode model, differentiable in the
      parameters; `logits` are the ones training accuracy is reported on.

Optional fields, for objectives that change the training step itself (defaults: off):

  replays, replay_update   free AT: the step replays the minibatch `replays` times, one update
      each, and carries the input perturbation delta (FreeTrainState.carry) from replay to replay
      and batch to batch; `replay_update(delta, grad_delta) -> delta` moves it after each replay.
  weight_perturb           AWP: `(params, grads, epoch) -> v`; the step takes the loss's
      gradient at params + v (v from the gradient `grads` of the same loss at params).
  load                     models the objective needs besides the one being trained (a
      distillation teacher, static models): `load(load_model) -> (frozen, bind)`, called once
      when the step is built, with the loader training passes (`load_model(workdir) ->
      run_io.Run`, robust_jax.run_io.load_model); `frozen` (arrays) is passed to the step and
      `bind(frozen, step_key) -> (perturb, loss)` is used in place of the two fields above.

Defenses (`DEFENSES`; their hyper-parameters are fields of `config.defense`):

  standard  cross-entropy on clean inputs.
  pgd_at    Madry et al. 2018: cross-entropy on `train_attack`'s examples. Field:
            `adv_fraction` (1: adversarial only; Croce et al. 2019: 0.5).
  trades    Zhang et al. 2019 (trades.py): CE(x) + beta * KL(p(x) || p(x_adv)); x_adv maximises
            the KL with `train_attack` (its norm, eps, steps and step_size). Field: `beta`.
  mart      Wang et al. 2020 (mart.py): boosted CE on `train_attack`'s examples + beta *
            KL(p(x) || p(x_adv)) * (1 - p_y(x)). Field: `beta` (the paper's lambda).
  fgsm_rs   Wong et al. 2020 (fast_at.py): cross-entropy on `train_attack`, FGSM from a random
            start with its own step_size (Wong: 1.25 * eps). Field: `fgsm_clip_start` (False:
            the gradient at the unclipped start, their MNIST code).
  free_at   Shafahi et al. 2019 (free_at.py): `replays` replays of each minibatch, the input
            perturbation taking `train_attack`'s FGSM step (Shafahi: eps) after each. Field:
            `replays` (m).
  awp       Wu et al. 2020 (awp.py): adversarial weight perturbation on top of `awp_base`
            ('pgd_at', 'trades' or 'mart'). Fields: `awp_gamma`, `awp_warmup` (epochs).
  distillation  Papernot et al. 2016 (distillation.py): `teacher` '' trains a teacher with CE
            at temperature T; else the student learns the teacher's soft labels at T.
            Fields: `temperature`, `teacher` (a workdir).
  ensemble_at   Tramer et al. 2018 (ensemble_at.py): half clean, half adversarial CE; each
            batch's `train_attack` runs on the current model or one of `static_models`
            (comma-separated workdirs), drawn at random.
  feature_squeezing  Xu, Evans & Qi 2018: trains like standard; the detector is added at
            evaluation (robust_jax/eval/detection.py). Fields (squeezing.py): `fpr`,
            `squeeze_bits`, `squeeze_median`, `calibration_examples`.
  ensemble  averages trained models (ensemble.py: its fields, model and the loading of its
            members); nothing to train. Fields: `members`, `combine`.

Label smoothing (`defense.label_smoothing` = a > 0; Szegedy et al. 2016, the modern recipe of
Gowal et al. 2020 / Rebuffi et al. 2021 / Wang et al. 2023 with a = 0.1): `build` hands the
loss targets (1 - a) * onehot + a / K (optax.smooth_labels) in place of the one-hot labels, so
every cross-entropy term of the training loss is smoothed and nothing else: TRADES' KL(p(x) ||
p(x_adv)) compares two predictions and has no labels, so it is unchanged (as in those papers,
which smooth only TRADES' clean cross-entropy). Objectives whose labels do more than weight a
cross-entropy (label_smoothing.py's NO_SMOOTHING: MART's p_y weight and boosted CE,
distillation's soft labels) reject it. Evaluation and attacks never see smoothed labels.
a = 0 is the unsmoothed loss, bit for bit (the loss is not wrapped).

`train_attack` has one meaning: the training attack as a full attack config, parsed once by
`train_attack(config)` (training_attack.py) and read the same way by every defense; a field a
defense cannot honour (TRADES with restarts > 1, FGSM-RS without a random start, ...) is a
ConfigError naming it. The overfitting monitor's attack follows it unless set
(`monitor_attack(config)`).

Facets (descriptor.py): `facets(config) -> Facets` says what the defense of `config.defense.name`
is without building it: `trainable`, `training_attack` (its step runs train_attack),
`replays` (updates per minibatch), `deployment` ('network', 'transform', 'ensemble' or
'detector': how it is evaluated) and `certifiable` (randomised smoothing). Each defense states
them next to its factory (`FACETS`: trades.FACETS, squeezing.FACETS, ..., free_at.facets,
transforms.facets). Training, evaluation and benchmarking read them; outside this package no
code compares `config.defense.name` (tests/test_defenses_facets.py). `check_name(config)`:
ConfigError on an unknown name.

One object per run: `resolve(config, load_model) -> Resolved` builds the defense once (its name,
facets, training objective, training and monitor attacks, and the training split) when the
config is validated (robust_jax.validation.validate returns it); the experiment passes it to
training (training.loop.fit), the evaluation it picks and the benchmark, which read its fields.
`facets(config)` remains for the dispatch and checks that run before anything is built.

Each factory, `factory(config, load_model=None) -> Defense`, validates its fields and raises
`errors.ConfigError` naming the bad one. `load_model` (workdir -> run_io.Run) is only used to
build a train_attack that attacks another trained run (a transfer attack's surrogate); this
package imports nothing that loads runs, its callers pass robust_jax.run_io.load_model.
"""

import math
from typing import Callable, NamedTuple

import jax.numpy as jnp

from robust_jax import attacks
from robust_jax import errors
from robust_jax.attacks import objectives
from robust_jax.defenses import awp
from robust_jax.defenses import descriptor
from robust_jax.defenses import distillation
from robust_jax.defenses import ensemble
from robust_jax.defenses import ensemble_at
from robust_jax.defenses import fast_at
from robust_jax.defenses import label_smoothing
from robust_jax.defenses import free_at
from robust_jax.defenses import mart
from robust_jax.defenses import squeezing
from robust_jax.defenses import trades
from robust_jax.defenses import training_attack
from robust_jax.defenses import transforms

train_attack = training_attack.spec
monitor_attack = training_attack.monitor_spec


class Defense(NamedTuple):
  perturb: Callable
  loss: Callable
  replays: int = 1
  replay_update: Callable | None = None
  weight_perturb: Callable | None = None
  load: Callable | None = None


def _ce_on(inputs):
  def loss(forward, x, x_adv, onehot):
    logits, stats = forward(inputs(x, x_adv))
    return objectives.cross_entropy(logits, onehot), logits, stats
  return loss


def _field(config, name, positive=False):
  """`config.defense.<name>` as a float; ConfigError unless a finite number >= 0 (> 0)."""
  value = config.defense.get(name)
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        and (value > 0 if positive else value >= 0))
  if not ok:
    raise errors.ConfigError(f'defense.{name}={value!r} must be a finite number '
                             f'{"> 0" if positive else ">= 0"} (defense {config.defense.name}).')
  return float(value)


def standard(config, load_model=None):
  del config, load_model
  return Defense(perturb=lambda logits_fn, x, y, keys: x, loss=_ce_on(lambda x, x_adv: x))


def _built_attack(config, load_model):
  """The training attack as it is (pgd_at, mart, ensemble_at honour every field)."""
  return attacks.build(train_attack(config), where='train_attack', load_model=load_model)


def pgd_at(config, load_model=None):
  """Madry et al. 2018: train on the train_attack's adversarial examples (`adv_fraction` of each
  batch; the rest stays clean, as in Croce et al. 2019's 50% adversarial batches)."""
  attack = _built_attack(config, load_model)
  fraction = config.defense.get('adv_fraction', 1.0)
  ok = (isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
        and 0 < fraction <= 1)
  if not ok:
    raise errors.ConfigError(f'defense.adv_fraction={fraction!r} must be a number in (0, 1]: '
                             'the share of each batch replaced by its adversarial examples.')
  if fraction == 1:
    return Defense(perturb=attack, loss=_ce_on(lambda x, x_adv: x_adv))

  def perturb(logits_fn, x, y, keys):
    # The first ceil(f * b) examples of each device's shard (batches are shuffled, so which
    # ones is random); one key per example keeps the result independent of the split.
    k = max(1, math.ceil(fraction * x.shape[0]))
    x_adv = attack(logits_fn, x[:k], y[:k], keys[:k] if keys.ndim else keys)
    return jnp.concatenate([x_adv, x[k:]], axis=0)
  return Defense(perturb=perturb, loss=_ce_on(lambda x, x_adv: x_adv))


def make_trades(config, load_model=None):
  """Zhang et al. 2019; accuracy on the clean logits."""
  del load_model  # its own inner loop
  beta = _field(config, 'beta')
  f = train_attack(config)
  return Defense(
      perturb=trades.make_perturb(norm=f['norm'], eps=f['eps'], steps=f['steps'],
                                  step_size=float(f['step_size'])),
      loss=trades.make_loss(beta))


def make_mart(config, load_model=None):
  """Wang et al. 2020 on the train_attack's (PGD-CE) examples; accuracy on adversarial logits."""
  beta = _field(config, 'beta')
  return Defense(perturb=_built_attack(config, load_model),
                 loss=mart.make_loss(beta))


def make_fgsm_rs(config, load_model=None):
  """Wong et al. 2020: train_attack is FGSM with a random start and its own step_size."""
  del load_model  # its own FGSM
  clip_start = config.defense.get('fgsm_clip_start', True)
  if not isinstance(clip_start, bool):
    raise errors.ConfigError(f'defense.fgsm_clip_start={clip_start!r} must be True or False.')
  f = train_attack(config)
  return Defense(
      perturb=fast_at.make_perturb(norm=f['norm'], eps=f['eps'], step_size=float(f['step_size']),
                                   clip_start=clip_start),
      loss=_ce_on(lambda x, x_adv: x_adv))


def _identity(logits_fn, x, y, keys):
  del logits_fn, y, keys
  return x


def make_free_at(config, load_model=None):
  """Shafahi et al. 2019: CE on clip(x + delta); delta takes train_attack's FGSM step."""
  del load_model  # its own replays
  replays = config.defense.get('replays')
  if not isinstance(replays, int) or isinstance(replays, bool) or replays < 1:
    raise errors.ConfigError(f'defense.replays={replays!r} must be an integer >= 1 (the '
                             'minibatch replays m; Shafahi et al.: 8 on CIFAR-10).')
  f = train_attack(config)
  return Defense(perturb=_identity, loss=_ce_on(lambda x, x_adv: x_adv), replays=replays,
                 replay_update=free_at.make_replay_update(norm=f['norm'], eps=f['eps'],
                                                          step_size=float(f['step_size'])))


AWP_BASES = ('pgd_at', 'trades', 'mart')


def make_awp(config, load_model=None):
  """Wu et al. 2020: the `awp_base` objective with adversarial weight perturbation."""
  base = config.defense.get('awp_base')
  if base not in AWP_BASES:
    raise errors.ConfigError(f'defense.awp_base={base!r}; valid: {list(AWP_BASES)}.')
  gamma = _field(config, 'awp_gamma', positive=True)
  warmup = _field(config, 'awp_warmup')
  return DEFENSES[base](config, load_model)._replace(
      weight_perturb=awp.make_weight_perturb(gamma=gamma, warmup_epochs=warmup))


def _workdirs(config, name, allow_empty):
  """`config.defense.<name>` split at commas; ConfigError unless a string (non-empty)."""
  value = config.defense.get(name)
  paths = [p.strip() for p in value.split(',') if p.strip()] if isinstance(value, str) else None
  if paths is None or (not paths and not allow_empty):
    raise errors.ConfigError(
        f'defense.{name}={value!r} must be {"a workdir or empty" if allow_empty else "one or more"}'
        f' comma-separated workdirs of trained robust_jax runs (defense {config.defense.name}).')
  return paths


def make_distillation(config, load_model=None):
  """Papernot et al. 2016: teacher ('' = train it) or student of `defense.teacher`."""
  del load_model  # the teacher loads in training (Defense.load)
  temperature = _field(config, 'temperature', positive=True)
  teacher = _workdirs(config, 'teacher', allow_empty=True)
  if len(teacher) > 1:
    raise errors.ConfigError(f'defense.teacher={config.defense.teacher!r}: one workdir only.')
  if not teacher:
    return Defense(perturb=_identity, loss=distillation.make_teacher_loss(temperature))
  return Defense(perturb=_identity, loss=distillation.make_teacher_loss(temperature),
                 load=distillation.make_student_load(teacher[0], temperature))


def make_ensemble_at(config, load_model=None):
  """Tramer et al. 2018: train_attack on a random source among current and static models."""
  static = _workdirs(config, 'static_models', allow_empty=False)  # they load in training
  attack = _built_attack(config, load_model)
  return Defense(perturb=attack, loss=ensemble_at.loss,
                 load=ensemble_at.make_load(static, attack))


def feature_squeezing(config, load_model=None):
  """Xu, Evans & Qi 2018: a normally trained classifier; the detector acts at evaluation."""
  squeezing.fields(config)
  return standard(config, load_model)


def make_ensemble(config, load_model=None):
  """Checks defense.members and defense.combine; an ensemble is evaluated, never trained."""
  del load_model  # the experiment loads the members (ensemble.load)
  ensemble.fields(config)

  def untrainable(*args):
    del args
    raise errors.ConfigError('defense.name=ensemble has no training objective: train the '
                             'members, then evaluate the ensemble (experiment.evaluate_ensemble).')
  return Defense(perturb=untrainable, loss=untrainable)


DEFENSES = {'standard': standard, 'pgd_at': pgd_at, 'trades': make_trades, 'mart': make_mart,
            'fgsm_rs': make_fgsm_rs, 'free_at': make_free_at, 'awp': make_awp,
            'distillation': make_distillation, 'ensemble_at': make_ensemble_at,
            'feature_squeezing': feature_squeezing, 'ensemble': make_ensemble}

Facets = descriptor.Facets
# Each defense's facets (descriptor.py): a Facets, or `f(config) -> Facets` where a field of
# config.defense sets one; input transformations: transforms.facets.
FACETS = {'standard': descriptor.STANDARD, 'pgd_at': descriptor.ADVERSARIAL,
          'trades': trades.FACETS, 'mart': mart.FACETS, 'fgsm_rs': fast_at.FACETS,
          'free_at': free_at.facets, 'awp': awp.FACETS, 'distillation': distillation.FACETS,
          'ensemble_at': ensemble_at.FACETS, 'feature_squeezing': squeezing.FACETS,
          'ensemble': ensemble.FACETS}


def check_name(config):
  """ConfigError unless `config.defense.name` is a defense or an input transformation."""
  name = config.defense.name
  if name not in DEFENSES and name not in transforms.TRANSFORMS:
    raise errors.ConfigError(
        f'defense.name={name!r}; valid: {sorted(DEFENSES)} or an input '
        f'transformation: {sorted(transforms.TRANSFORMS)}.')


def facets(config):
  """The Facets of `config.defense.name`, read from the config: nothing is built or validated
  but the name (ConfigError on an unknown one)."""
  check_name(config)
  if config.defense.name in transforms.TRANSFORMS:
    return transforms.facets(config)
  f = FACETS[config.defense.name]
  return f if isinstance(f, Facets) else f(config)


def training_data(config, dataset):
  """The dataset the defense trains on: `dataset` less the split it keeps out of training (the
  feature-squeezing detector's calibration images), or `dataset` itself."""
  if facets(config).deployment == 'detector':
    return squeezing.training_data(config, dataset)
  return dataset


def _transformed(config, load_model=None):
  """An input-transformation defense (transforms.py): cross-entropy through the transform."""
  transforms.from_config(config)  # validates the transform's fields
  return standard(config, load_model)


def build(config, load_model=None):
  """The Defense of `config.defense.name`; `load_model`: see the module docstring."""
  check_name(config)
  name = config.defense.name
  if name in transforms.TRANSFORMS:
    defense = _transformed(config, load_model)
  else:
    defense = DEFENSES[name](config, load_model)
  amount = label_smoothing.amount(config)
  return label_smoothing.smoothed(defense, amount) if amount else defense


class Resolved(NamedTuple):
  """A defense built once from its config (`resolve`); training, evaluation and benchmarking
  read these fields instead of config.defense."""
  name: str
  facets: Facets
  objective: Defense        # the training objective (`build`)
  train_attack: dict        # the training attack's full fields (training_attack.spec)
  monitor_attack: dict      # the overfitting monitor's attack (training_attack.monitor_spec)
  training_data: Callable   # dataset -> the dataset it trains on (less a detector's split)


def resolve(config, load_model=None):
  """The Resolved defense of `config`: every field checked (ConfigError naming the bad one) and
  the training objective built once; `load_model`: see the module docstring."""
  check_name(config)
  f = facets(config)
  attack = train_attack(config)
  objective = build(config, load_model)

  def data(dataset):
    return squeezing.training_data(config, dataset) if f.deployment == 'detector' else dataset

  return Resolved(config.defense.name, f, objective, attack, monitor_attack(config), data)
