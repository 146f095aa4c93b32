r"""robust_jax entry point: flags -> config -> train / eval / benchmark. Wiring only.

  python launch.py                                   # default: PGD-AT on Fashion-MNIST + report
  python launch.py --config=configs/default.py --workdir=workdirs/x --config.train.epochs=1
  python launch.py --mode=eval --config=configs/default.py --checkpoint=workdirs/x
  python launch.py --mode=export --checkpoint=workdirs/x --export_path=x.pt [the run's flags]
  python launch.py --mode=benchmark --config.model.name=madry_cnn --config.benchmark.batch_size=256
  python launch.py --mode=table --config=configs/papers/wong2020_fast.py   # a paper's table
  python launch.py --mode=table --config=configs/zoo.py --table_jobs=2     # the defense zoo
  python launch.py --seeds=0,1,2 --workdir=workdirs/demo_seeds   # mean and spread over seeds

Running the same train command again resumes from the workdir's latest checkpoint.
"""

import logging as py_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(_HERE, 'configs', 'default.py'),
    'Config file (optionally `path.py:arg`); override fields with --config.a.b=v.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, metrics and results go '
    '(default: workdirs/<config file name>).')
_MODE = flags.DEFINE_enum('mode', 'train_and_eval',
                          ['train_and_eval', 'eval', 'export', 'benchmark', 'table'],
                          'What to run (export: the weights --mode=eval scores as a PyTorch '
                          'state dict, --export_path).')
_TABLE_ROWS = flags.DEFINE_string(
    'table_rows', None, "--mode=table: 'cpu' (default), 'full', 'all' or comma-separated rows "
    '(default with --config=PAPER.py:ROW: that row).')
_TABLE_RUN = flags.DEFINE_bool(
    'table_run', True, '--mode=table: run the rows without results (false: only collect).')
_TABLE_JOBS = flags.DEFINE_integer(
    'table_jobs', 1, '--mode=table: rows run at a time; above 1 each row runs as its own '
    'launch.py process, logging to WORKDIR/<row>.log.')
_TABLE_RERUN_STALE = flags.DEFINE_bool(
    'table_rerun_stale', False, '--mode=table: also run again the rows flagged stale (results '
    'from code older than the last change to the evaluation code, or +dirty / unknown).')
_SEEDS = flags.DEFINE_string(
    'seeds', None, 'train_and_eval over several seeds, e.g. 0,1,2: each in WORKDIR/seed_<s> '
    '(its config.seed set), then WORKDIR/seeds.json and seeds.md with mean, std and range.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, '--mode=eval: a workdir, one checkpoint folder, or a PyTorch state dict '
    '(.pt/.pth/.bin/.safetensors) of --config.model\'s architecture (default: --workdir). '
    '--mode=export: a workdir or one checkpoint folder.')
_EXPORT_PATH = flags.DEFINE_string(
    'export_path', None, '--mode=export: the PyTorch file (.pt/.pth) to write.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show progress bars.')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'Multi-host: call jax.distributed.initialize ("auto": when the flags below, JAX_* variables '
    'or a multi-task SLURM job say so). See BUILD.md.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None,
    'Multi-host: host:port of process 0 (or $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Multi-host: number of processes (or $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Multi-host: this process, 0..num_processes-1 (or $JAX_PROCESS_ID).')
_COMPILE_CACHE = flags.DEFINE_string(
    'compile_cache', 'auto', 'Directory of the persistent cache of compiled programs, so a '
    'later run with the same model and shapes skips compiling (robust_jax/compile_cache.py): '
    '"auto": ~/.cache/robust_jax/xla, except --mode=benchmark (cold compiles); "off": none. '
    '$JAX_COMPILATION_CACHE_DIR wins when set.')
_HEARTBEAT = flags.DEFINE_integer(
    'heartbeat_timeout_s', 60, 'Multi-host: seconds after which the survivors of a dead peer exit.')


def _default_workdir():
  path = flags.FLAGS['config'].value if flags.FLAGS['config'].present else 'default.py'
  name = os.path.splitext(os.path.basename(str(path).split(':')[0]))[0]
  return os.path.join('workdirs', name)


def _quiet_libraries():
  """Keeps orbax's and TFDS's per-save INFO lines out of the console (warnings still show)."""
  noisy = ('/orbax/', '/tensorflow_datasets/', '/etils/')
  logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= py_logging.WARNING or not any(p in r.pathname for p in noisy))


def _table():
  """--mode=table: the table config's rows, run where missing, then its Markdown table."""
  import jax  # pylint: disable=g-import-not-at-top
  from robust_jax import errors  # pylint: disable=g-import-not-at-top
  from robust_jax import experiment  # pylint: disable=g-import-not-at-top
  from robust_jax import parallel  # pylint: disable=g-import-not-at-top
  from robust_jax import tables  # pylint: disable=g-import-not-at-top
  from robust_jax import validation  # pylint: disable=g-import-not-at-top
  if _TABLE_JOBS.value > 1 and jax.process_count() > 1:
    raise errors.ConfigError('--table_jobs > 1 starts one process per row: not in a multi-host '
                             'run.')
  path, _, row = config_flags.get_config_filename(flags.FLAGS['config']).partition(':')
  which = _TABLE_ROWS.value or row or 'cpu'
  devices = parallel.make_mesh().devices.size
  _, skipped = tables.run_table(
      path, which, _WORKDIR.value, config_flags.get_override_values(flags.FLAGS['config']),
      run=_TABLE_RUN.value, validate=lambda c: validation.validate(c, devices),
      run_fn=lambda c, w: experiment.train_and_evaluate(c, w, progress=_PROGRESS.value),
      rerun_stale=_TABLE_RERUN_STALE.value, jobs=_TABLE_JOBS.value)
  if skipped:
    print(f'\nrobust_jax: error: {len(skipped)} row(s) could not run here: '
          f'{", ".join(skipped)} (reasons above the table).', file=sys.stderr, flush=True)
    sys.exit(2)


def _over_seeds(config, workdir):
  """--seeds: one run per seed (each resumes like any run), then the table over seeds."""
  from robust_jax import errors  # pylint: disable=g-import-not-at-top
  from robust_jax import experiment  # pylint: disable=g-import-not-at-top
  from robust_jax import seeds as seeds_lib  # pylint: disable=g-import-not-at-top
  try:
    seeds = seeds_lib.parse(_SEEDS.value)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from None
  for s in seeds:
    run = config.copy_and_resolve_references()
    with run.unlocked():
      run.seed = s
    experiment.train_and_evaluate(run, seeds_lib.seed_workdir(workdir, s),
                                  progress=_PROGRESS.value)
  _, text = seeds_lib.write(workdir, seeds)
  print(text, flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _quiet_libraries()
  # Imported here so that --help stays fast and JAX starts after flags are parsed.
  from robust_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from robust_jax import errors  # pylint: disable=g-import-not-at-top
  from robust_jax import experiment  # pylint: disable=g-import-not-at-top
  from robust_jax.interop import torch_files  # pylint: disable=g-import-not-at-top

  from robust_jax import compile_cache  # pylint: disable=g-import-not-at-top
  from robust_jax import distributed  # pylint: disable=g-import-not-at-top

  compile_cache.enable(compile_cache.choose(_COMPILE_CACHE.value, _MODE.value))
  config = _CONFIG.value
  workdir = _WORKDIR.value or _default_workdir()
  try:
    distributed.initialize(
        distributed.settings(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                             _PROCESS_ID.value), heartbeat_timeout_s=_HEARTBEAT.value)
    if _MODE.value == 'benchmark':
      from robust_jax import benchmark  # pylint: disable=g-import-not-at-top
      from robust_jax import parallel  # pylint: disable=g-import-not-at-top
      from robust_jax import validation  # pylint: disable=g-import-not-at-top
      mesh = parallel.make_mesh()
      validation.validate(config, mesh.devices.size)
      benchmark.main(config, workdir, mesh)  # table, then JSON; WORKDIR/benchmark.json
    elif _MODE.value == 'table':
      _table()
    elif _MODE.value == 'eval':
      experiment.evaluate_checkpoint(config, workdir, _CHECKPOINT.value or workdir,
                                     progress=_PROGRESS.value)
    elif _MODE.value == 'export':
      experiment.export_checkpoint(config, _CHECKPOINT.value or workdir, _EXPORT_PATH.value)
    elif _SEEDS.value:
      _over_seeds(config, workdir)
    else:
      experiment.train_and_evaluate(config, workdir, progress=_PROGRESS.value)
  except (errors.ConfigError, errors.CheckpointWriteError, FileNotFoundError, FloatingPointError,
          data_lib.DatasetUnavailableError, torch_files.CheckpointFormatError) as e:
    logging.error('%s', e)
    print(f'\nrobust_jax: error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
