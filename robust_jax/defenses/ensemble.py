"""An ensemble that averages the outputs of trained models: `defense.name='ensemble'`.

Averaging the predictions of several independently trained networks is the simplest ensemble
defense (Strauss et al. 2017, "Ensemble methods as a defense to adversarial perturbations against
deep neural networks"). He et al. 2017 ("Adversarial example defenses: ensembles of weak defenses
are not strong") show that an ensemble must be attacked as a whole; the evaluation does that
here: the attacks differentiate the averaged output.

    model, params, batch_stats, members = ensemble.load(config, run_io.load_model)
    logits = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=False)

`config.defense.members` is a comma-separated list of workdirs of trained runs, each loaded with
its own config (architectures may differ; the dataset must be `config.data.name`).
`config.defense.combine` says what is averaged:

  logits   mean_i z_i(x)
  probs    log(mean_i softmax(z_i(x))): the log of the averaged probabilities, so attacks and
           the sanity checks get logit-like outputs (their softmax is the averaged probabilities)

The params tree is {'member_0': ..., 'member_1': ...} (batch_stats likewise, for the members with
BatchNorm), so `robust_jax.eval.robust.evaluate` runs on the ensemble unchanged.
"""

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from robust_jax import errors
from robust_jax.defenses import descriptor
from robust_jax.defenses import transforms

# The average of trained runs: nothing to train, the members are the checkpoints.
FACETS = descriptor.Facets(trainable=False, deployment='ensemble')

COMBINE = ('logits', 'probs')


def fields(config):
  """(member workdirs, combine) of `config.defense`; ConfigError naming the bad field or member.

  Each member must be a workdir with a config.json whose data.name is `config.data.name`.
  """
  members, combine = config.defense.get('members', ''), config.defense.get('combine', 'logits')
  if combine not in COMBINE:
    raise errors.ConfigError(f'defense.combine={combine!r}; valid: {list(COMBINE)}.')
  dirs = [d.strip() for d in members.split(',')] if isinstance(members, str) else []
  dirs = [d for d in dirs if d]
  if not dirs:
    raise errors.ConfigError(
        f'defense.members={members!r} must name the workdirs of trained runs, comma-separated '
        '(e.g. "workdirs/ensemble_member_1,workdirs/ensemble_member_2").')
  for d in dirs:
    path = os.path.join(d, 'config.json')
    if not os.path.exists(path):
      raise errors.ConfigError(f'defense.members: {d!r} is not the workdir of a trained run '
                               f'({path} not found); train it first or fix the path.')
    with open(path) as f:
      data = json.load(f).get('data', {}).get('name')
    if data != config.data.name:
      raise errors.ConfigError(
          f'defense.members: {d!r} was trained on data.name={data!r} but data.name='
          f'{config.data.name!r}; every member must share the ensemble\'s dataset.')
  return dirs, combine


def combine_outputs(outputs, combine):
  """outputs: f32[N,B,K] (member, example, class) -> f32[B,K] as described in the module doc."""
  if combine == 'logits':
    return jnp.mean(outputs, axis=0)
  log_p = jax.nn.log_softmax(outputs, axis=-1)
  return jax.scipy.special.logsumexp(log_p, axis=0) - jnp.log(float(outputs.shape[0]))


class Ensemble(nn.Module):
  """The average of `members` (unbound flax modules taking (x, train) and returning logits)."""
  members: Sequence[Any]
  combine: str = 'logits'

  def setup(self):
    if self.combine not in COMBINE:
      raise ValueError(f'combine={self.combine!r}; valid: {list(COMBINE)}.')
    self.nets = [m.clone(parent=self, name=f'member_{i}') for i, m in enumerate(self.members)]

  def __call__(self, x, train=False):
    """x: f32[B,H,W,C] in [0,1] -> f32[B,K]."""
    return combine_outputs(jnp.stack([net(x, train=train) for net in self.nets]), self.combine)


def load(config, load_model):
  """Loads the members of `config.defense.members`.

  Args:
    config: the ensemble's config (`defense.members`, `defense.combine`, `data.name`).
    load_model: `workdir -> (model, params, batch_stats, config, step)`, e.g.
      `robust_jax.run_io.load_model` (the experiment passes it).
  Returns:
    (Ensemble, params {'member_i': ...}, batch_stats {'member_i': ...} (members with BatchNorm
    only), members: a list of {workdir, model, defense, seed, step}, one per member).
  """
  dirs, combine = fields(config)
  nets, params, batch_stats, record = [], {}, {}, []
  for i, d in enumerate(dirs):
    try:
      model, p, stats, member_config, step = load_model(d)
    except FileNotFoundError as e:
      raise errors.ConfigError(f'defense.members: {d!r} has no checkpoint to load: {e}') from e
    if transforms.is_preprocessed(model):
      raise errors.ConfigError(
          f'defense.members: {d!r} is a {member_config.defense.name!r} model behind an input '
          'transformation; its BPDA/EOT views do not pass through an ensemble, so only plain '
          'networks can be members.')
    nets.append(model)
    params[f'member_{i}'] = p
    if stats:
      batch_stats[f'member_{i}'] = stats
    record.append({'workdir': os.path.abspath(d), 'model': member_config.model.name,
                   'defense': member_config.defense.name, 'seed': member_config.seed,
                   'step': int(step)})
  return Ensemble(members=tuple(nets), combine=combine), params, batch_stats, record
