"""Datasets held in memory as numpy: `load(config.data) -> Dataset`.

Everything goes through TFDS array_record files (no TensorFlow needed to read them):

* `fashion_mnist` (and `mnist` given `source_dir`) are prepared offline from IDX files by
  `idx_builder.IdxImages` into `<data_dir>/idx_images/<name>/`, once; later loads reuse them.
* `cifar10` is prepared offline by `cifar_builder.CifarImages` from the folder `source_dir`
  (the official python version, all 10,000 test images, into `<data_dir>/cifar_images/cifar10/`;
  or the png copy, the first 1,000 test images, into `.../cifar_images/cifar10_test1000/`).
  Without `source_dir`: an offline preparation already made, else the TFDS catalogue's if
  prepared, else the shared png copy when this is a checkout with `../shared/datasets/cifar10`
  beside it (our machines and CI; nothing else depends on it), else the catalogue.
* `mnist`, `cifar10`, `cifar100`, `svhn_cropped` otherwise come from the TFDS catalogue: read
  if already prepared (array_record) in `data_dir`, else downloaded and prepared, which needs
  network (checked within seconds first) and, in TFDS 4.9.10, TensorFlow.

  dataset = load(ml_collections.ConfigDict(dict(name='fashion_mnist', data_dir='', source_dir='')))
  dataset.train_images.shape  # (60000, 28, 28, 1), uint8

This module knows the datasets (`DATASETS`) and prepares them (`prepare`); records.py reads a
prepared split, whole or (data.train_read='records') row by row from disk.
"""

import dataclasses
import importlib.util
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from robust_jax.data import cifar_builder
from robust_jax.data import extra as extra_lib
from robust_jax.data import idx_builder
from robust_jax.data import records as records_lib
# Reading a prepared split is records.py's; these are importable from here too.
from robust_jax.data.records import RecordColumn  # noqa: F401
from robust_jax.data.records import Records  # noqa: F401

# The repository's root; in a checkout (not an installed package) its parent may hold shared/.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shared_copy(name):
  """`<repo>/../shared/datasets/<name>` if this is a checkout with that folder beside it, else ''.

  Our machines and CI keep a shared copy of CIFAR-10 there; a user's machine never needs it (an
  explicit `source_dir` always wins).
  """
  folder = os.path.normpath(os.path.join(REPO_ROOT, '..', 'shared', 'datasets', name))
  is_checkout = os.path.isfile(os.path.join(REPO_ROOT, 'pyproject.toml'))
  return folder if is_checkout and os.path.isdir(folder) else ''


# shape: (H, W, C); mean/std: per channel over the training set, in [0,1] pixel scale;
# test_size: the official test split's size; offline: can be prepared without network from local
# files (mnist only given a source_dir); source_dir: default folder of those files ('' none);
# tfds_name: the TFDS catalogue name.
DATASETS = {
    'fashion_mnist': dict(shape=(28, 28, 1), num_classes=10, mean=(0.2860,), std=(0.3530,),
                          offline=True, source_dir='/usr/share/datasets/fashion-mnist',
                          tfds_name='fashion_mnist', test_size=10_000),
    'mnist': dict(shape=(28, 28, 1), num_classes=10, mean=(0.1307,), std=(0.3081,),
                  offline=True, source_dir='/usr/share/datasets/mnist', tfds_name='mnist',
                  test_size=10_000),
    'cifar10': dict(shape=(32, 32, 3), num_classes=10, mean=(0.4914, 0.4822, 0.4465),
                    std=(0.2470, 0.2435, 0.2616), offline=True,
                    source_dir=shared_copy('cifar10'), tfds_name='cifar10', test_size=10_000),
    'cifar100': dict(shape=(32, 32, 3), num_classes=100, mean=(0.5071, 0.4865, 0.4409),
                     std=(0.2673, 0.2564, 0.2762), offline=False, source_dir='',
                     tfds_name='cifar100', test_size=10_000),
    'svhn_cropped': dict(shape=(32, 32, 3), num_classes=10, mean=(0.4377, 0.4438, 0.4728),
                         std=(0.1980, 0.2010, 0.1970), offline=False, source_dir='',
                         tfds_name='svhn_cropped', test_size=26_032),
}


class DatasetUnavailableError(RuntimeError):
  """The dataset cannot be prepared or read here; the message says what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A whole dataset in host memory.

  Attributes:
    train_images, test_images: uint8[N,H,W,C] in [0,255] (read-only arrays).
    train_labels, test_labels: int32[N] in [0, num_classes) (read-only arrays).
    num_classes: number of classes.
    mean, std: per-channel training-set statistics in [0,1] pixel scale (length C).
    name: the DATASETS key.
    test_size: the size of the official test split (test_images may hold only its first part).
    extra: the additional training data mixed into every batch (extra.ExtraSet), or None.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  mean: tuple
  std: tuple
  name: str
  test_size: int = 0
  extra: object = None


READ_MODES = ('auto', 'memory', 'records')


def read_mode(data_cfg):
  """'memory' or 'records' for `data_cfg.train_read` ('auto': records on several hosts)."""
  mode = data_cfg.get('train_read', 'auto')
  if mode not in READ_MODES:
    raise ValueError(f'data.train_read={mode!r}; valid: {list(READ_MODES)}.')
  if mode == 'auto':
    return 'records' if jax.process_count() > 1 else 'memory'
  return mode


def load(data_cfg):
  """Prepares (if needed) and reads `data_cfg.name`; see the module docstring.

  Args:
    data_cfg: has `name`, `data_dir` ('' -> $TFDS_DATA_DIR or ~/tensorflow_datasets),
      `source_dir` ('' -> the dataset's default IDX folder) and optionally `train_read`:
      'memory' reads the whole training split into host memory; 'records' keeps it on disk and
      reads, for each batch, only the rows it is indexed with (`RecordColumn`), so each host of a
      multi-host run reads only its share of every batch; 'auto' (default): 'records' on
      several hosts, else 'memory'. The test split is always read whole. Optionally `extra`:
      additional training data (robust_jax/data/extra.py), opened into `Dataset.extra`.
  Raises:
    ValueError: unknown name (lists the valid ones).
    extra.ExtraDataError: the additional data is missing or malformed (the message says how).
    DatasetUnavailableError: the data cannot be had here (offline, missing or corrupt files).
  """
  if jax.process_count() > 1:
    # Process 0 prepares first: on a shared filesystem the others then find it ready instead of
    # racing it; on per-host disks each prepares its own copy after the barrier.
    if jax.process_index() == 0:
      prepare(data_cfg.name, data_cfg.data_dir, data_cfg.source_dir)
    multihost_utils.sync_global_devices('robust_jax.data.prepare')
  mode = read_mode(data_cfg)
  builder = prepare(data_cfg.name, data_cfg.data_dir, data_cfg.source_dir)
  info = DATASETS[data_cfg.name]
  try:
    if mode == 'records':
      records = records_lib.Records(builder, 'train', tuple(info['shape']))
      x_train, y_train = records.column('image'), records.column('label')
    else:
      x_train, y_train = records_lib.read_split(builder, 'train')
    x_test, y_test = records_lib.read_split(builder, 'test')
  except (ImportError, ValueError, NotImplementedError) as e:
    raise DatasetUnavailableError(
        f'Cannot read {data_cfg.name} from {builder.data_dir}: {e}') from e
  for array in (x_train, y_train, x_test, y_test):
    if isinstance(array, np.ndarray):
      array.flags.writeable = False  # Shared by every step; indexing returns writable copies.
  dataset = Dataset(x_train, y_train, x_test, y_test, num_classes=info['num_classes'],
                    mean=tuple(info['mean']), std=tuple(info['std']), name=data_cfg.name,
                    test_size=info['test_size'])
  if not extra_lib.active(data_cfg.get('extra')):
    return dataset
  cache_dir = (data_cfg.data_dir or os.environ.get('TFDS_DATA_DIR')
               or os.path.expanduser('~/tensorflow_datasets'))
  return dataclasses.replace(dataset, extra=extra_lib.open_extra(data_cfg.extra, dataset,
                                                                 cache_dir))


def test_split(num_examples, test_size):
  """results.json's record of which test images an evaluation used (the first `num_examples`).

  >>> test_split(1000, 10000)['note']
  'first 1,000 test images (of 10,000)'
  """
  if num_examples == test_size:
    note = f'all {test_size:,} test images'
  else:
    note = f'first {num_examples:,} test images' + (f' (of {test_size:,})' if test_size else '')
  return {'examples': num_examples, 'of': test_size, 'note': note}


def prepare(name, data_dir='', source_dir=''):
  """Makes sure `name` is prepared as array_record in `data_dir`; returns its TFDS builder.

  Offline datasets already prepared from IDX files are reused whatever `source_dir` is. `mnist`
  uses IDX files when prepared so or when `source_dir` holds them, else the TFDS catalogue.
  Raises ValueError / DatasetUnavailableError as `load` does.
  """
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}; valid: {sorted(DATASETS)}.')
  info = DATASETS[name]
  data_dir = data_dir or os.environ.get('TFDS_DATA_DIR') or None
  note = ''
  if name == 'cifar10':
    return _prepare_cifar10(data_dir, source_dir, info)
  if info['offline']:
    builder = idx_builder.IdxImages(config=name, data_dir=data_dir)
    folder = source_dir or info['source_dir']
    if _is_prepared(builder):
      return builder
    if folder:
      missing = _missing_idx_files(folder)
      if not missing:
        return _prepare_from_folder(builder, folder, idx_builder.IdxFileError,
                                    builder.builder_config.name)
      if name == 'fashion_mnist':
        raise DatasetUnavailableError(_no_fashion_mnist_message(folder, missing))
      note = f' ({folder} lacks {", ".join(missing)})'
  return _prepare_catalogue(name, info['tfds_name'], data_dir, note)


CIFAR10_FILES = ('the official python version (cifar-10-batches-py: data_batch_1 .. '
                 'data_batch_5, test_batch, batches.meta)')


def _prepare_cifar10(data_dir, source_dir, info):
  """CIFAR-10 from `source_dir` if given, else as the module docstring says."""
  if source_dir:  # the user's folder wins over anything prepared or shared
    return _prepare_cifar(data_dir, source_dir)
  builder = cifar_builder.CifarImages(config='cifar10', data_dir=data_dir)
  if _is_prepared(builder):
    return builder
  if _is_prepared(tfds.builder(info['tfds_name'], data_dir=data_dir)):
    return _prepare_catalogue('cifar10', info['tfds_name'], data_dir)
  if info['source_dir'] and os.path.isdir(info['source_dir']):
    return _prepare_cifar(data_dir, info['source_dir'])
  note = (f'; for CIFAR-10 without network, put {CIFAR10_FILES} in a folder and pass '
          '--config.data.source_dir=<that folder>')
  return _prepare_catalogue('cifar10', info['tfds_name'], data_dir, note)


def _prepare_cifar(data_dir, folder):
  """Prepares (once) CIFAR-10 from the files in `folder`, in whichever format they are."""
  source_format = cifar_builder.detect_format(folder)
  if source_format is None:
    why = 'does not exist' if not os.path.isdir(folder) else 'holds no CIFAR-10 files'
    raise DatasetUnavailableError(
        f'CIFAR-10 source folder {folder} {why}. Put {CIFAR10_FILES} there (the folder itself '
        'or the folder holding cifar-10-batches-py) and pass it as --config.data.source_dir.')
  builder = cifar_builder.CifarImages(config=cifar_builder.FORMAT_CONFIG[source_format],
                                      data_dir=data_dir)
  if _is_prepared(builder):
    return builder
  return _prepare_from_folder(builder, folder, cifar_builder.CifarFileError,
                              f'cifar10 from {folder}')


def _is_prepared(builder):
  # `is_prepared` alone logs a warning when the folder does not exist yet.
  return builder.data_path.exists() and builder.is_prepared()


def _missing_idx_files(folder):
  missing = []
  for _, prefix in idx_builder.SPLIT_PREFIXES:
    for kind in ('images', 'labels'):
      try:
        idx_builder.find_idx_file(folder, prefix, kind)
      except idx_builder.IdxFileError:
        missing.append(f'{prefix}-{kind}-idx{3 if kind == "images" else 1}-ubyte[.gz]')
  return missing


def _no_fashion_mnist_message(folder, missing):
  return (f'Fashion-MNIST IDX files not found in {folder} (missing: {", ".join(missing)}). '
          'Install them with `sudo apt-get update && sudo apt-get install -y '
          'dataset-fashion-mnist` (-> /usr/share/datasets/fashion-mnist), or point '
          '--config.data.source_dir at a folder holding train-images-idx3-ubyte.gz, '
          'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.')


def _prepare_from_folder(builder, folder, file_error, what):
  """Prepares `builder` offline from the files in `folder`; a damaged or missing file (the
  builder's `file_error`) becomes one DatasetUnavailableError naming `what`."""
  config = tfds.download.DownloadConfig(manual_dir=folder, try_download_gcs=False)
  try:
    builder.download_and_prepare(download_config=config, file_format='array_record')
  except file_error as e:
    raise DatasetUnavailableError(f'Cannot prepare {what}: {e}') from e
  return builder


def _prepare_catalogue(name, tfds_name, data_dir, note=''):
  """The TFDS catalogue builder for `tfds_name`, downloading and preparing it if needed."""
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  if _is_prepared(builder):
    return builder
  # The dataset's own download URLs, as TFDS records them; a builder without any is left to
  # TFDS, whose own error then says what it could not reach.
  urls = sorted(builder.url_infos or {})
  if urls and not network_reachable(urls):
    raise DatasetUnavailableError(_offline_message(tfds_name, builder.data_dir, urls, note))
  if importlib.util.find_spec('tensorflow') is None:
    raise DatasetUnavailableError(
        f'Preparing {name} from the TFDS catalogue needs TensorFlow (TFDS uses it to encode '
        f'images), which is not installed. `pip install tensorflow-cpu`, or prepare it on '
        f'another machine and copy it to {builder.data_dir}; reading it back needs '
        '`pip install pillow` (or opencv-python-headless) but no TensorFlow.')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(),
                               file_format='array_record')
  return builder


def _offline_message(name, target, urls, note):
  hosts = sorted({urllib.parse.urlsplit(url).netloc for url in urls})
  return (
      f'Dataset {name!r} is not prepared in {target} and this machine appears offline '
      f'(cannot reach {", ".join(hosts)}){note}. Offline choices: '
      "--config.data.name=fashion_mnist (from Debian's dataset-fashion-mnist), or "
      '--config.data.name=mnist --config.data.source_dir=<folder with the 4 MNIST IDX files> '
      '(`bash scripts/fetch_mnist.sh` puts them in /usr/share/datasets/mnist, the default). '
      f'Or, on a machine with network (and TensorFlow installed), run: `import '
      f"tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='DIR')."
      "download_and_prepare(file_format='array_record')` and copy DIR/"
      f'{name} to {os.path.dirname(os.path.dirname(target))}.')


def network_reachable(urls, timeout=3.0):
  """True if every URL answers an HTTP HEAD request (status < 400, or 405) within `timeout` s.

  Probes run concurrently in daemon threads, so the whole check (DNS included, which socket
  timeouts do not bound) returns within about `timeout` seconds. Honours $https_proxy etc.
  An HTTP-level probe, because sandboxes may accept any TCP connection and answer 403/404.
  """
  answers = {}

  def probe(url):
    try:
      with urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout) as r:
        answers[url] = r.status < 400
    except urllib.error.HTTPError as e:
      answers[url] = e.code == 405  # The server is there but refuses HEAD.
    except Exception:  # noqa: BLE001  # Any failure means "not reachable".
      answers[url] = False

  threads = [threading.Thread(target=probe, args=(url,), daemon=True) for url in urls]
  deadline = time.monotonic() + timeout
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  return all(answers.get(url, False) for url in urls)
