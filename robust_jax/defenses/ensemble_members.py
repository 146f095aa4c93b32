"""The `config.defense` fields of `defense.name='ensemble'`: its members and how they combine.

The ensemble model and the loading of its members are robust_jax/models/ensemble.py; the fields
are checked here so that `defenses.build` validates them without importing the models.
"""

import json
import os

from robust_jax import errors
from robust_jax.defenses import descriptor

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
