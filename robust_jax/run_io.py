"""Loading a trained run from its workdir: the deployed model rebuilt from config.json, and the
weights of a checkpoint.

    run = run_io.load_model('workdirs/pgd_at')   # Run(model, params, batch_stats, config, step)
    model, params, batch_stats, config, step = run
    logits = run.logits_fn()(x)                  # inference mode (BatchNorm's running stats)

This module imports nothing above the models, the checkpoints and the train state. The parts
that use another run's model (the transfer attack's surrogate, distillation's teacher, ensemble
AT's static models, the ensemble's members) do not import it: they take `load_model` from their
caller (the experiment, the evaluation, training), so the attacks and defenses never import
the code that runs them.
"""

import json
import os
from typing import Any, NamedTuple

import jax

from robust_jax import data as data_lib
from robust_jax import errors
from robust_jax import model_fns
from robust_jax import models
from robust_jax.defenses import transforms
from robust_jax.training import checkpoint
from robust_jax.training import optim
from robust_jax.training import state as state_lib


class Run(NamedTuple):
  """A trained run: unpacks as (model, eval params, batch_stats, config, step)."""
  model: Any
  params: Any
  batch_stats: Any
  config: Any
  step: int

  def variables(self):
    """{'params', 'batch_stats'}: the weights, e.g. for a jitted step to take as an argument."""
    return {'params': self.params, 'batch_stats': self.batch_stats}

  def logits_fn(self, variables=None):
    """`x: f32[B,H,W,C] in [0,1] -> f32[B,K]` in inference mode, with this run's weights or
    `variables` ({'params', 'batch_stats'}, e.g. copies passed through a jitted step)."""
    v = self.variables() if variables is None else variables
    return model_fns.logits_fn(self.model, v['params'], v['batch_stats'], 'eval')


def deployed_model(config, num_classes, mean, std):
  """The network of `config.model`, behind the defense's input transformation if it has one."""
  transform = transforms.from_config(config)
  if transform is not None and transform.normalization is not None:
    if config.model.get('mean', ()) or config.model.get('std', ()):
      raise errors.ConfigError(
          f'model.mean/model.std are set, but defense.name={config.defense.name!r} feeds the '
          'network its own encoding with its own normalisation; unset model.mean and model.std.')
    mean, std = transform.normalization  # e.g. thermometer codes: not pixels
  net = models.build(config.model, num_classes=num_classes, mean=mean, std=std)
  return transforms.wrap(net, transform)


def load_model(run_dir, checkpoint_path=None):
  """A trained model from a workdir: Run(model, eval params, batch_stats, config, step).

  The model is rebuilt from `run_dir/config.json`; weights come from `checkpoint_path` (default:
  the workdir's latest checkpoint). Single device; for attacks and analysis.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(run_dir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: expected the workdir of a robust_jax training run.')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  info = data_lib.DATASETS[config.data.name]
  model = deployed_model(config, info['num_classes'], info['mean'], info['std'])
  tx, _ = optim.make_optimizer(config.optim, 1, 1)
  template = state_lib.init_state(model, tx, jax.random.key(0), info['shape'],
                                  config.optim.ema_decay)
  state, step = checkpoint.load(checkpoint_path or run_dir, template)
  return Run(model, state.eval_params(), state.batch_stats, config, step)
