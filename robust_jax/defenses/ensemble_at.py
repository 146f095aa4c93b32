"""Ensemble adversarial training (Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel 2018).

    load = ensemble_at.make_load(['workdirs/a', 'workdirs/b'], attack)
    frozen, bind = load(run_io.load_model)  # the static models' weights; bind(frozen, key) ->
                                            # (perturb, loss)

Adversarial examples transferred from fixed pre-trained ("static") models are added to training,
which decouples their generation from the model being trained. As in the authors' MNIST code
(github.com/ftramer/ensemble-adv-training, train_adv.py and tf_utils.py):

- for every training batch, the source of the adversarial examples is drawn uniformly at random
  among the model being trained and the static models (one source for the whole batch, drawn
  from the step's key, so every device uses the same one);
- the attack (`train_attack`; the authors use FGSM on MNIST) ascends the cross-entropy of the
  source model's own predicted labels instead of the true ones, to avoid label leaking
  (Kurakin et al. 2017);
- the loss is half clean, half adversarial: 0.5 * CE(f(x), y) + 0.5 * CE(f(x_adv), y).

The static models are evaluated in inference mode and never updated; only the chosen source's
attack runs (`lax.switch`). Training accuracy is reported on the clean logits; BatchNorm
statistics are those of the adversarial pass.
"""

import functools

import jax
import jax.numpy as jnp

from robust_jax import rng
from robust_jax.attacks import objectives
from robust_jax.defenses import descriptor

# Its training step runs train_attack on the current model or a static one.
FACETS = descriptor.ADVERSARIAL


def source_index(key, num_sources):
  """int32 scalar in [0, num_sources): 0 is the model being trained, i >= 1 static model i-1."""
  return jax.random.randint(jax.random.fold_in(key, rng.ENSEMBLE_SOURCE), (), 0, num_sources)


def loss(forward, x, x_adv, onehot):
  """0.5 * CE(f(x), y) + 0.5 * CE(f(x_adv), y) per example; clean logits; adversarial stats."""
  clean_logits, _ = forward(x)
  adv_logits, stats = forward(x_adv)
  per_example = 0.5 * (objectives.cross_entropy(clean_logits, onehot)
                       + objectives.cross_entropy(adv_logits, onehot))
  return per_example, clean_logits, stats


def transfer(attack, source_fn, x, keys):
  """`attack` run on `source_fn` against its own predicted labels (no label leaking)."""
  predicted = jnp.argmax(jax.lax.stop_gradient(source_fn(x)), axis=-1)
  return attack(source_fn, x, predicted, keys)


def make_perturb(attack, static_fns, key):
  """`perturb(logits_fn, x, y, keys)` that attacks the source `source_index(key, ...)` picks.

  `static_fns`: logits functions of the static models (x f32[B,H,W,C] in [0,1] -> f32[B,K]).
  """

  def perturb(logits_fn, x, y, keys):
    del y  # the sources' own predictions are attacked
    sources = [logits_fn, *static_fns]
    branches = [functools.partial(transfer, attack, fn) for fn in sources]
    return jax.lax.switch(source_index(key, len(sources)), branches, x, keys)

  return perturb


def make_load(static_dirs, attack):
  """Returns `load(load_model) -> (frozen, bind)` for the static models trained in `static_dirs`.

  `load_model` (workdir -> run_io.Run; training passes robust_jax.run_io.load_model) loads them.
  `frozen` is a tuple of {'params', 'batch_stats'} (evaluation weights), which the train step
  takes as an argument; `bind(frozen, key)` returns (perturb, loss). `attack(logits_fn, x, y,
  keys) -> x_adv` is the train attack. Raises FileNotFoundError naming a workdir that has no
  config or checkpoint.
  """

  def load(load_model):
    runs = [load_model(path) for path in static_dirs]
    weights = tuple(run.variables() for run in runs)
    runs = [run._replace(params=None, batch_stats=None) for run in runs]  # the step gets `weights`

    def bind(frozen, key):
      fns = [run.logits_fn(f) for run, f in zip(runs, frozen)]
      return make_perturb(attack, fns, key), loss

    return weights, bind

  return load
