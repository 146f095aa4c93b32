"""Runs an experiment from a config: train (or resume), evaluate, write WORKDIR/results.json.

    from robust_jax import experiment
    results = experiment.train_and_evaluate(config, workdir)

WORKDIR holds config.json, metrics.jsonl, tensorboard/, checkpoints/, results.json and report.md.

Other trained runs a config names (a distillation teacher, ensemble AT's static models, the
ensemble's members, a transfer attack's surrogate) are loaded by run_io.load_model, which the
experiment and the evaluation pass to the parts that use them: the attacks and defenses never
import this module.
"""

import os
import time

import jax
from absl import logging

from robust_jax import data as data_lib
from robust_jax import defenses
from robust_jax import errors
from robust_jax import parallel
from robust_jax import report
from robust_jax import run_io
from robust_jax import validation
from robust_jax import version
from robust_jax.eval import detection
from robust_jax.eval import robust
from robust_jax.interop import torch_files
from robust_jax.interop import torch_models
from robust_jax.training import checkpoint
from robust_jax.training import loop
from robust_jax.training import metrics as train_metrics
from robust_jax.training import optim
from robust_jax.training import state as state_lib


code_version = version.code_version  # kept here for callers of experiment.code_version
# Loading a run lives in run_io.py (which the attacks' and defenses' callers pass on); kept here.
load_model = run_io.load_model
deployed_model = run_io.deployed_model


def setup(config):
  """Validates the config, loads the data, builds the mesh, the model and the defense (once:
  defenses.Resolved, passed on to training and evaluation)."""
  mesh = parallel.make_mesh()
  defense = validation.validate(config, mesh.devices.size)
  dataset = data_lib.load(config.data)
  model = deployed_model(config, dataset.num_classes, dataset.mean, dataset.std)
  return mesh, dataset, model, defense


def _finish(results, artifacts, config, workdir, title, extra, dataset):
  # Which test images ran: 'first 1,000 test images (of 10,000)' beside every figure.
  split = data_lib.test_split(results['num_examples'], dataset.test_size)
  results = {**results, **extra, 'test_split': split, 'config': config.to_dict(),
             **report.provenance()}
  print('\n' + report.write(workdir, results, artifacts, title) + '\n', flush=True)
  return results


def train_and_evaluate(config, workdir, progress=True):
  """Trains (resuming from WORKDIR's latest checkpoint), evaluates, returns the results dict."""
  if not defenses.facets(config).trainable:  # an ensemble: trained members, nothing to train
    return evaluate_ensemble(config, workdir, progress)
  mesh, dataset, model, defense = setup(config)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    report.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  logging.info('%s on %s: %d train / %d test examples, %d devices', config.model.name,
               dataset.name, len(dataset.train_labels), len(dataset.test_labels),
               mesh.devices.size)
  t0 = time.perf_counter()
  fitted = loop.fit(config, workdir, defense.training_data(dataset), model, mesh,
                    progress=progress, load_model=load_model, defense=defense)
  state = fitted.state
  train_seconds = time.perf_counter() - t0
  records = getattr(dataset.train_images, 'records', None)
  if records is not None:  # data.train_read='records': this host read only its rows
    logging.info('Training records read by host %d: %d (of %d on disk).', jax.process_index(),
                 records.reads, records.size)
  results, artifacts = _evaluate(config, defense, workdir, model, state.eval_params(),
                                 state.batch_stats, dataset, mesh, progress)
  extra = {'train_steps': int(jax.device_get(state.step)), 'train_seconds_this_run': train_seconds,
           'train_seconds_total': train_metrics.train_seconds(workdir), 'monitor': fitted.monitor}
  if fitted.best_state is not None:  # co_action 'best': the best epoch's weights too
    extra['early_stopping'] = _evaluate_best(config, workdir, model, fitted, dataset, mesh,
                                             progress, results)
  title = f'{config.model.name} / {config.defense.name} on {dataset.name}'
  return _finish(results, artifacts, config, workdir, title, extra, dataset)


_FINAL_ONLY = ('sanity_checks', 'eps_curve', 'certify')  # what the best weights' evaluation skips


def _evaluate_best(config, workdir, model, fitted, dataset, mesh, progress, final):
  """The evaluation (attacks and suite, no sanity checks) of the best monitored epoch's weights.

  When the best epoch is the last one, its weights are the final ones: the final evaluation
  `final` is reported again (less its sanity checks, eps curve and certification, which the best
  weights' evaluation does not run) instead of attacking the same weights twice.
  """
  best = fitted.best_state
  step = int(jax.device_get(best.step))
  if step == int(jax.device_get(fitted.state.step)):
    results = {k: v for k, v in final.items() if k not in _FINAL_ONLY}
    results.update(same_as_final=True, eval_seconds=0.0)  # no time of its own
  else:
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.eval.sanity_checks = False
      cfg.eval.certify.examples = 0
    results, _ = robust.evaluate(model, best.eval_params(), best.batch_stats, dataset, cfg, mesh,
                                 progress=progress,
                                 progress_dir=os.path.join(workdir, 'eval_progress_best'))
  record = fitted.monitor['best']
  return {**results, 'step': step, 'epoch': record['epoch'],
          'monitor_pgd_accuracy': record['pgd_accuracy'],
          'monitor_clean_accuracy': record['clean_accuracy']}


def evaluate_checkpoint(config, workdir, checkpoint_path, progress=True):
  """Evaluates a saved model with `config.eval`.

  `checkpoint_path`: a workdir, one checkpoint step folder, or a PyTorch/safetensors file of
  `config.model`'s architecture (robust_jax/interop/torch_models.py; e.g. a RobustBench model).
  """
  if defenses.facets(config).deployment == 'ensemble':  # the members are the checkpoints
    return evaluate_ensemble(config, workdir, progress)
  if torch_files.is_weights_file(checkpoint_path):
    return _evaluate_torch_file(config, workdir, checkpoint_path, progress)
  mesh, dataset, model, defense = setup(config)
  state, step = restore(config, checkpoint_path, model, dataset.train_images.shape[1:],
                        len(dataset.train_labels), mesh)
  results, artifacts = _evaluate(config, defense, workdir, model, state.eval_params(),
                                 state.batch_stats, dataset, mesh, progress)
  title = f'{config.model.name} from {checkpoint_path} (step {step}) on {dataset.name}'
  return _finish(results, artifacts, config, workdir, title,
                 {'checkpoint': os.path.abspath(checkpoint_path), 'train_steps': step}, dataset)


def restore(config, checkpoint_path, model, image_shape, num_train, mesh):
  """(train state, step) of a workdir, its checkpoints/ or one step folder, restored into the
  state that `config` builds for `model` on `num_train` training images of `image_shape`
  (replicated over `mesh`); `state.eval_params()` are the weights --mode=eval scores (the EMA
  copy when optim.ema_decay > 0)."""
  tx, _ = optim.make_optimizer(config.optim, loop.num_train_steps(config, num_train),
                               data_lib.steps_per_epoch(num_train, config.train.batch_size))
  template = state_lib.init_state(model, tx, jax.random.key(0), image_shape,
                                  config.optim.ema_decay)
  return checkpoint.load(checkpoint_path, parallel.replicate(template, mesh))


def export_checkpoint(config, checkpoint_path, export_path):
  """Writes the weights --mode=eval scores as a PyTorch state dict file; returns what it printed.

  `checkpoint_path`: a workdir, its checkpoints/ or one step folder of a run of `config` (the
  flags it was trained with, as for --mode=eval). The file holds the network only, in the layout
  of robust_jax/interop/torch_models.py; the input normalisation is not in it and is printed.
  """
  fields = torch_models.architecture(config.model)  # ConfigError when it has no layout
  if defenses.facets(config).deployment != 'network':
    raise errors.ConfigError(
        f'defense.name={config.defense.name!r} deploys more than the network '
        f'({defenses.facets(config).deployment}); a PyTorch file would hold the network alone. '
        'Export runs whose defense deploys the network itself (e.g. standard, pgd_at, trades).')
  if not str(export_path or '').endswith(('.pt', '.pth')):
    raise errors.ConfigError(f'--export_path={export_path!r}: name the PyTorch file to write, '
                             'ending in .pt or .pth.')
  if torch_files.is_weights_file(checkpoint_path):
    raise errors.ConfigError(f'--checkpoint={checkpoint_path} is a weights file already; export '
                             'takes a workdir or a checkpoint folder.')
  mesh, dataset, model, _ = setup(config)
  state, step = restore(config, checkpoint_path, model, dataset.train_images.shape[1:],
                        len(dataset.train_labels), mesh)
  variables = jax.device_get({'params': state.eval_params(), 'batch_stats': state.batch_stats})
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(export_path)), exist_ok=True)
    torch_models.save_torch(export_path, config.model, variables)
  raw = all(m == 0 for m in model.mean) and all(s == 1 for s in model.std)
  which = 'EMA weights' if state.ema_params is not None else 'weights'
  text = '\n'.join([
      f'Exported the {which} of {checkpoint_path} (step {step}) to {export_path}',
      '  architecture: ' + ', '.join(f'{k}={v}' for k, v in fields.items()) +
      f', num_classes={dataset.num_classes}',
      '  input: f32[B,C,H,W] in [0,1], ' + ('fed as it is (model.normalize=false)' if raw else
      f'normalised first by (x - mean) / std, mean={tuple(model.mean)}, std={tuple(model.std)} '
      '(not stored in the file)'),
      f'  sha256: {torch_files.sha256(export_path) if jax.process_index() == 0 else "-"}',
      f'  (--mode=eval --checkpoint={export_path} with the same flags evaluates it again)'])
  print(text, flush=True)
  return text


def _evaluate_torch_file(config, workdir, path, progress):
  """The evaluation of a PyTorch state dict file loaded into `config.model`'s network."""
  mesh, dataset, model, defense = setup(config)
  image_shape = dataset.test_images.shape[1:]
  net, variables = torch_models.convert(
      torch_files.load_state_dict(path), config.model, num_classes=dataset.num_classes,
      image_shape=image_shape, source=path)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(
      (1,) + image_shape), train=False))
  if (jax.tree_util.tree_structure(dict(expected)) !=
      jax.tree_util.tree_structure(dict(variables))):
    raise errors.ConfigError(
        f'defense.name={config.defense.name!r} deploys the network behind a transformation with '
        f'its own variables; a PyTorch file holds the network alone ({net.__class__.__name__}). '
        'Evaluate it with --config.defense.name=standard, or with a parameter-free input '
        'transformation.')
  params = parallel.replicate(variables['params'], mesh)
  batch_stats = parallel.replicate(variables.get('batch_stats', {}), mesh)
  results, artifacts = _evaluate(config, defense, workdir, model, params, batch_stats, dataset,
                                 mesh, progress)
  title = f'{config.model.name} from {os.path.basename(path)} (PyTorch) on {dataset.name}'
  return _finish(results, artifacts, config, workdir, title,
                 {'checkpoint': os.path.abspath(path), 'checkpoint_format': 'pytorch',
                  'checkpoint_sha256': torch_files.sha256(path)}, dataset)


def _evaluator(defense):
  """detection.evaluate for a detection defense (the detector in the loop), else the robust
  evaluation (robust.evaluate; it certifies too when eval.certify says so)."""
  detects = defense.facets.deployment == 'detector'
  return detection.evaluate if detects else robust.evaluate


def _evaluate(config, defense, workdir, model, params, batch_stats, dataset, mesh, progress):
  """Runs the evaluation `defense` (defenses.Resolved) needs with config.eval, keeping per-batch
  progress in WORKDIR/eval_progress."""
  return _evaluator(defense)(model, params, batch_stats, dataset, config, mesh,
                             progress=progress,
                             progress_dir=os.path.join(workdir, 'eval_progress'))


def evaluate_ensemble(config, workdir, progress=True):
  """Evaluates the average of the trained runs in `config.defense.members` (defenses/ensemble.py).

  Nothing is trained; results.json records each member's workdir, model and step.
  """
  mesh = parallel.make_mesh()
  defense = validation.validate(config, mesh.devices.size)
  dataset = data_lib.load(config.data)
  model, params, batch_stats, members = defenses.ensemble.load(config, load_model)
  params, batch_stats = parallel.replicate((params, batch_stats), mesh)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    report.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  results, artifacts = _evaluate(config, defense, workdir, model, params, batch_stats, dataset,
                                 mesh, progress)
  title = (f'ensemble of {len(members)} ({model.combine}: '
           f'{", ".join(m["model"] for m in members)}) on {dataset.name}')
  return _finish(results, artifacts, config, workdir, title,
                 {'ensemble': {'combine': model.combine, 'members': members}}, dataset)
