"""Datasets held in memory as numpy: `load(config.data) -> Dataset`.

Everything goes through TFDS array_record files (no TensorFlow needed to read them):

* `fashion_mnist` (and `mnist` given `source_dir`) are prepared offline from IDX files by
  `idx_builder.IdxImages` into `<data_dir>/idx_images/<name>/`, once; later loads reuse them.
* `mnist`, `cifar10`, `cifar100`, `svhn_cropped` otherwise come from the TFDS catalogue: read
  if already prepared (array_record) in `data_dir`, else downloaded and prepared, which needs
  network (checked within seconds first) and, in TFDS 4.9.10, TensorFlow.

  dataset = load(ml_collections.ConfigDict(dict(name='fashion_mnist', data_dir='', source_dir='')))
  dataset.train_images.shape  # (60000, 28, 28, 1), uint8
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

from robust_jax.data import idx_builder

# shape: (H, W, C); mean/std: per channel over the training set, in [0,1] pixel scale;
# offline: can be prepared without network from IDX files (mnist only given a source_dir);
# source_dir: default folder of IDX files; tfds_name: the TFDS catalogue name.
DATASETS = {
    'fashion_mnist': dict(shape=(28, 28, 1), num_classes=10, mean=(0.2860,), std=(0.3530,),
                          offline=True, source_dir='/usr/share/datasets/fashion-mnist',
                          tfds_name='fashion_mnist'),
    'mnist': dict(shape=(28, 28, 1), num_classes=10, mean=(0.1307,), std=(0.3081,),
                  offline=True, source_dir='/usr/share/datasets/mnist', tfds_name='mnist'),
    'cifar10': dict(shape=(32, 32, 3), num_classes=10, mean=(0.4914, 0.4822, 0.4465),
                    std=(0.2470, 0.2435, 0.2616), offline=False, source_dir='',
                    tfds_name='cifar10'),
    'cifar100': dict(shape=(32, 32, 3), num_classes=100, mean=(0.5071, 0.4865, 0.4409),
                     std=(0.2673, 0.2564, 0.2762), offline=False, source_dir='',
                     tfds_name='cifar100'),
    'svhn_cropped': dict(shape=(32, 32, 3), num_classes=10, mean=(0.4377, 0.4438, 0.4728),
                         std=(0.1980, 0.2010, 0.1970), offline=False, source_dir='',
                         tfds_name='svhn_cropped'),
}
_FALLBACK_URL = 'https://storage.googleapis.com/'
_CHUNK = 10_000  # records decoded per `__getitems__` call


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
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  mean: tuple
  std: tuple
  name: str


def load(data_cfg):
  """Prepares (if needed) and reads `data_cfg.name`; see the module docstring.

  Args:
    data_cfg: has `name`, `data_dir` ('' -> $TFDS_DATA_DIR or ~/tensorflow_datasets) and
      `source_dir` ('' -> the dataset's default IDX folder).
  Raises:
    ValueError: unknown name (lists the valid ones).
    DatasetUnavailableError: the data cannot be had here (offline, missing or corrupt files).
  """
  if jax.process_count() > 1:
    # Process 0 prepares first: on a shared filesystem the others then find it ready instead of
    # racing it; on per-host disks each prepares its own copy after the barrier.
    if jax.process_index() == 0:
      prepare(data_cfg.name, data_cfg.data_dir, data_cfg.source_dir)
    multihost_utils.sync_global_devices('robust_jax.data.prepare')
  builder = prepare(data_cfg.name, data_cfg.data_dir, data_cfg.source_dir)
  info = DATASETS[data_cfg.name]
  read = _read_idx_split if isinstance(builder, idx_builder.IdxImages) else _read_tfds_split
  try:
    (x_train, y_train), (x_test, y_test) = read(builder, 'train'), read(builder, 'test')
  except (ImportError, ValueError, NotImplementedError) as e:
    raise DatasetUnavailableError(
        f'Cannot read {data_cfg.name} from {builder.data_dir}: {e}') from e
  for array in (x_train, y_train, x_test, y_test):
    array.flags.writeable = False  # Shared by every step; indexing returns writable copies.
  return Dataset(x_train, y_train, x_test, y_test, num_classes=info['num_classes'],
                 mean=tuple(info['mean']), std=tuple(info['std']), name=data_cfg.name)


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
  if info['offline']:
    builder = idx_builder.IdxImages(config=name, data_dir=data_dir)
    folder = source_dir or info['source_dir']
    if _is_prepared(builder):
      return builder
    if folder:
      missing = _missing_idx_files(folder)
      if not missing:
        return _prepare_idx(builder, folder)
      if name == 'fashion_mnist':
        raise DatasetUnavailableError(_no_fashion_mnist_message(folder, missing))
      note = f' ({folder} lacks {", ".join(missing)})'
  return _prepare_catalogue(name, info['tfds_name'], data_dir, note)


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


def _prepare_idx(builder, folder):
  config = tfds.download.DownloadConfig(manual_dir=folder, try_download_gcs=False)
  try:
    builder.download_and_prepare(download_config=config, file_format='array_record')
  except idx_builder.IdxFileError as e:
    raise DatasetUnavailableError(f'Cannot prepare {builder.builder_config.name}: {e}') from e
  return builder


def _prepare_catalogue(name, tfds_name, data_dir, note=''):
  """The TFDS catalogue builder for `tfds_name`, downloading and preparing it if needed."""
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  if _is_prepared(builder):
    return builder
  urls = sorted(builder.url_infos or {}) or [_FALLBACK_URL]
  if not network_reachable(urls):
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


def _read_idx_split(builder, split):
  """(uint8[N,H,W,C], int32[N]) of an IdxImages split, via raw records (~2x faster than TFDS)."""
  source = builder.as_data_source(split=split,
                                  deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  records = source.__getitems__(range(len(source)))
  return idx_builder.decode_records(records, builder.builder_config.image_shape)


def _read_tfds_split(builder, split):
  """(uint8[N,H,W,C], int32[N]) of any split with 'image' and 'label' features."""
  source = builder.as_data_source(split=split)
  images, labels = [], []
  for start in range(0, len(source), _CHUNK):
    examples = source.__getitems__(range(start, min(start + _CHUNK, len(source))))
    images.append(np.stack([e['image'] for e in examples]))
    labels.append(np.array([e['label'] for e in examples], np.int32))
  return np.concatenate(images).astype(np.uint8), np.concatenate(labels)
