"""Tests for robust_jax.data: IDX builder, sources, batching, augmentation."""

import gzip
import http.server
import importlib.util
import os
import socket
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from robust_jax import data
from robust_jax.data import idx_builder
from robust_jax.data import prepare
from robust_jax.data import sources

FASHION_DIR = '/usr/share/datasets/fashion-mnist'
N_TRAIN, N_TEST = 50, 23


def _write_idx(path, array, magic, compress=True):
  header = magic.to_bytes(4, 'big') + b''.join(d.to_bytes(4, 'big') for d in array.shape)
  with (gzip.open if compress else open)(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


def _write_idx_dataset(folder, seed=0, compress=True):
  """Writes tiny train/t10k IDX files; returns {'train': (x[N,28,28,1], y), 'test': ...}."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  ext = '.gz' if compress else ''
  arrays = {}
  for split, prefix, n in (('train', 'train', N_TRAIN), ('test', 't10k', N_TEST)):
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n, dtype=np.uint8)
    _write_idx(os.path.join(folder, f'{prefix}-images-idx3-ubyte{ext}'), x, 2051, compress)
    _write_idx(os.path.join(folder, f'{prefix}-labels-idx1-ubyte{ext}'), y, 2049, compress)
    arrays[split] = (x[..., None], y.astype(np.int32))
  return arrays


def _cfg(name, data_dir='', source_dir=''):
  return ml_collections.ConfigDict(dict(name=name, data_dir=str(data_dir),
                                        source_dir=str(source_dir)))


# Sources: IDX datasets built and read through TFDS.

def test_idx_dataset_roundtrip_and_reuse(tmp_path):
  src = tmp_path / 'src'
  arrays = _write_idx_dataset(src)
  ds = data.load(_cfg('fashion_mnist', tmp_path / 'tfds', src))
  np.testing.assert_array_equal(ds.train_images, arrays['train'][0])  # order kept
  np.testing.assert_array_equal(ds.train_labels, arrays['train'][1])
  np.testing.assert_array_equal(ds.test_images, arrays['test'][0])
  np.testing.assert_array_equal(ds.test_labels, arrays['test'][1])
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert (ds.num_classes, ds.name) == (10, 'fashion_mnist')
  assert ds.mean == data.DATASETS['fashion_mnist']['mean'] and len(ds.std) == 1
  assert not ds.train_images.flags.writeable
  assert (tmp_path / 'tfds/idx_images/fashion_mnist/1.0.0/dataset_info.json').exists()
  # Second load: reuses the prepared files (the source is gone).
  for f in src.iterdir():
    f.unlink()
  again = data.load(_cfg('fashion_mnist', tmp_path / 'tfds', src))
  np.testing.assert_array_equal(again.test_images, arrays['test'][0])


def test_records_mode_reads_only_the_rows_asked_for(tmp_path):
  src = tmp_path / 'src'
  arrays = _write_idx_dataset(src)
  cfg = _cfg('fashion_mnist', tmp_path / 'tfds', src)
  with cfg.unlocked():
    cfg.train_read = 'records'
  ds = data.load(cfg)
  x, y = arrays['train']
  images, labels = ds.train_images, ds.train_labels
  assert isinstance(images, sources.RecordColumn) and images.records.reads == 0
  assert images.shape == x.shape and labels.shape == y.shape and len(labels) == len(y)
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  idx = np.array([5, 0, 17, 5, 3])
  np.testing.assert_array_equal(images[idx], x[idx])
  np.testing.assert_array_equal(labels[idx], y[idx])  # the same rows: read once
  assert images.records.reads == 5
  tail = images[-4:]  # a slice reads nothing; indexing it reads its rows
  assert images.records.reads == 5 and tail.shape == (4,) + x.shape[1:]
  np.testing.assert_array_equal(tail[np.array([0, -1])], x[-4:][[0, -1]])
  np.testing.assert_array_equal(np.asarray(labels[-6:]), y[-6:])
  np.testing.assert_array_equal(ds.test_images, arrays['test'][0])  # the test split: in memory
  with pytest.raises(IndexError):
    images[np.array([len(x)])]
  with pytest.raises(ValueError, match='train_read'):
    with cfg.unlocked():
      cfg.train_read = 'disk'
    data.load(cfg)


def test_mnist_from_uncompressed_idx_and_tfds_data_dir_env(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'env_tfds'))
  arrays = _write_idx_dataset(tmp_path / 'src', seed=1, compress=False)
  ds = data.load(_cfg('mnist', '', tmp_path / 'src'))
  np.testing.assert_array_equal(ds.train_labels, arrays['train'][1])
  assert (ds.name, ds.mean) == ('mnist', data.DATASETS['mnist']['mean'])
  assert (tmp_path / 'env_tfds/idx_images/mnist/1.0.0').is_dir()


def test_missing_fashion_mnist_folder_says_what_to_do(tmp_path):
  with pytest.raises(data.DatasetUnavailableError) as e:
    data.load(_cfg('fashion_mnist', tmp_path / 'tfds', tmp_path / 'nowhere'))
  msg = str(e.value)
  assert 'sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist' in msg
  assert '--config.data.source_dir' in msg and str(tmp_path / 'nowhere') in msg


def test_missing_idx_file_is_named(tmp_path):
  _write_idx_dataset(tmp_path / 'src')
  (tmp_path / 'src/t10k-labels-idx1-ubyte.gz').unlink()
  with pytest.raises(data.DatasetUnavailableError, match='t10k-labels-idx1-ubyte'):
    data.load(_cfg('fashion_mnist', tmp_path / 'tfds', tmp_path / 'src'))


def test_corrupt_idx_file_is_named_and_nothing_is_left_prepared(tmp_path):
  src = tmp_path / 'src'
  _write_idx_dataset(src)
  bad = src / 'train-images-idx3-ubyte.gz'
  raw = gzip.decompress(bad.read_bytes())
  bad.write_bytes(gzip.compress(raw[:-5]))  # truncated
  with pytest.raises(data.DatasetUnavailableError, match=f'{bad}.*truncated'):
    data.load(_cfg('fashion_mnist', tmp_path / 'tfds', src))
  _write_idx_dataset(src)  # repaired: preparing works now
  assert len(data.load(_cfg('fashion_mnist', tmp_path / 'tfds', src)).train_labels) == N_TRAIN


@pytest.mark.parametrize('damage, match', [
    (lambda raw: b'\x00\x00\x08\x01' + raw[4:], 'magic number 2049, expected 2051'),
    (lambda raw: raw[:10], 'truncated'),
    (lambda raw: raw + b'\x00', 'data bytes'),
    (lambda raw: b'not gzip at all', 'Cannot read'),
])
def test_read_idx_rejects_damaged_files(tmp_path, damage, match):
  path = tmp_path / 'x-images-idx3-ubyte.gz'
  _write_idx(path, np.zeros((3, 28, 28), np.uint8), 2051)
  raw = gzip.decompress(path.read_bytes())
  damaged = damage(raw)
  path.write_bytes(damaged if damaged.startswith(b'not') else gzip.compress(damaged))
  with pytest.raises(idx_builder.IdxFileError, match=match) as e:
    idx_builder.read_idx(str(path), idx_builder.IMAGE_MAGIC, (28, 28))
  assert str(path) in str(e.value)


def test_label_count_mismatch(tmp_path):
  _write_idx_dataset(tmp_path)
  _write_idx(tmp_path / 't10k-labels-idx1-ubyte.gz', np.zeros(N_TEST + 1, np.uint8), 2049)
  with pytest.raises(idx_builder.IdxFileError, match=f'{N_TEST} images but .* {N_TEST + 1}'):
    idx_builder.read_idx_split(str(tmp_path), 't10k', (28, 28, 1), 10)


# Sources: catalogue datasets and names.

@pytest.mark.parametrize('name', ['cifar10', 'mnist'])
def test_catalogue_dataset_offline_fails_fast(tmp_path, monkeypatch, name):
  monkeypatch.setattr(sources, 'network_reachable', lambda *a, **k: False)
  # Whether or not this machine has MNIST's IDX files in the default folder.
  monkeypatch.setitem(sources.DATASETS[name], 'source_dir', str(tmp_path / 'no_idx_files'))
  start = time.perf_counter()
  with pytest.raises(data.DatasetUnavailableError) as e:
    data.load(_cfg(name, tmp_path / 'tfds'))
  assert time.perf_counter() - start < 10
  msg = str(e.value)
  assert isinstance(e.value, RuntimeError)
  for part in (repr(name), 'offline', 'fashion_mnist', '--config.data.source_dir=',
               "download_and_prepare(file_format='array_record')"):
    assert part in msg


@pytest.mark.skipif(importlib.util.find_spec('tensorflow') is not None, reason='would download')
def test_catalogue_dataset_online_without_tensorflow_says_so(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, 'network_reachable', lambda *a, **k: True)
  with pytest.raises(data.DatasetUnavailableError, match='needs TensorFlow'):
    data.load(_cfg('cifar100', tmp_path / 'tfds'))


def test_mnist_with_empty_source_dir_says_what_is_missing(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, 'network_reachable', lambda *a, **k: False)
  (tmp_path / 'src').mkdir()
  with pytest.raises(data.DatasetUnavailableError, match='lacks train-images-idx3-ubyte'):
    data.load(_cfg('mnist', tmp_path / 'tfds', tmp_path / 'src'))


def test_network_check_is_quick(monkeypatch):
  for var in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
    monkeypatch.delenv(var, raising=False)

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # pylint: disable=invalid-name
      self.send_response(200 if self.path == '/ok' else 404)
      self.end_headers()

    def log_message(self, *args):
      pass

  with http.server.HTTPServer(('127.0.0.1', 0), Handler) as server, socket.socket() as silent:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent.bind(('127.0.0.1', 0))
    silent.listen(1)  # accepts connections but never answers
    base = f'http://127.0.0.1:{server.server_address[1]}'
    assert sources.network_reachable([f'{base}/ok'], timeout=2)
    assert not sources.network_reachable([f'{base}/ok', f'{base}/missing'], timeout=2)
    start = time.perf_counter()
    assert not sources.network_reachable(['https://host.invalid/'], timeout=0.5)  # RFC 2606
    assert not sources.network_reachable([f'http://127.0.0.1:{silent.getsockname()[1]}/'] * 3,
                                         timeout=0.5)
    assert time.perf_counter() - start < 3
    server.shutdown()


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match='cifar10.*fashion_mnist.*svhn_cropped'):
    data.load(_cfg('imagenet'))


def test_datasets_table():
  for name, info in data.DATASETS.items():
    assert len(info['mean']) == len(info['std']) == info['shape'][-1], name
    assert info['tfds_name'] and isinstance(info['offline'], bool)


def test_prepare_cli(tmp_path, capsys):
  _write_idx_dataset(tmp_path / 'src')
  args = [f'--data_dir={tmp_path / "tfds"}', f'--source_dir={tmp_path / "src"}']
  assert prepare.main(['--name=fashion_mnist', *args]) == 0
  assert capsys.readouterr().out.strip().endswith('idx_images/fashion_mnist/1.0.0')
  assert prepare.main(['--name=fashion_mnist', f'--data_dir={tmp_path / "t2"}',
                       f'--source_dir={tmp_path / "none"}']) == 2
  assert 'dataset-fashion-mnist' in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason=f'{FASHION_DIR} absent')
def test_real_fashion_mnist(tmp_path):
  ds = data.load(_cfg('fashion_mnist', tmp_path / 'tfds'))
  assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
  assert ds.train_images.dtype == np.uint8 and ds.test_labels.dtype == np.int32
  assert set(np.unique(ds.train_labels)) == set(range(10)) == set(np.unique(ds.test_labels))
  np.testing.assert_allclose(ds.train_images.mean() / 255, ds.mean[0], atol=1e-4)
  np.testing.assert_allclose((ds.train_images / 255).std(), ds.std[0], atol=1e-4)


# Batching.

def test_train_indices_deterministic_permutation_per_epoch():
  n, b = 103, 10  # 10 steps per epoch, 3 examples dropped
  assert data.steps_per_epoch(n, b) == 10

  def epoch(seed, e):
    return np.concatenate([data.train_indices(seed, 10 * e + s, b, n) for s in range(10)])

  e0 = epoch(0, 0)
  assert e0.dtype == np.int64 and len(set(e0)) == 100 and e0.min() >= 0 and e0.max() < n
  np.testing.assert_array_equal(e0, epoch(0, 0))
  assert not np.array_equal(e0, epoch(0, 1))
  assert not np.array_equal(e0, epoch(1, 0))
  np.testing.assert_array_equal(data.train_indices(0, 13, b, n), epoch(0, 1)[30:40])


def test_steps_per_epoch_and_host_slice_errors():
  with pytest.raises(ValueError):
    data.steps_per_epoch(5, 10)
  assert data.host_slice(8, 1, 4) == slice(2, 4)
  assert data.host_slice(8, 0, 1) == slice(0, 8)
  with pytest.raises(ValueError, match='not divisible'):
    data.host_slice(10, 0, 4)


# Augmentation.

def _batch(b=8, hw=8):
  x = jax.random.uniform(jax.random.key(0), (b, hw, hw, 3))
  return x, jax.random.split(jax.random.key(1), b)


def test_augment_noop_without_flags():
  x, keys = _batch()
  assert data.augment(x, keys, random_crop=False, random_flip=False) is x


@pytest.mark.parametrize('crop, flip', [(True, False), (False, True), (True, True)])
def test_augment_shape_range_change_and_determinism(crop, flip):
  x, keys = _batch()
  fn = jax.jit(lambda x, k: data.augment(x, k, random_crop=crop, random_flip=flip))
  y = fn(x, keys)
  assert y.shape == x.shape and y.dtype == x.dtype
  assert float(y.min()) >= 0 and float(y.max()) <= 1
  assert not jnp.array_equal(y, x)
  np.testing.assert_array_equal(y, fn(x, keys))
  # Per-example keys: an example's augmentation does not depend on the rest of the batch.
  np.testing.assert_array_equal(y[3:5], fn(x[3:5], keys[3:5]))


def test_augment_flip_mirrors_and_crop_is_a_shifted_window():
  x, keys = _batch(b=32)
  flipped = data.augment(x, keys, random_crop=False, random_flip=True)
  is_flip = jnp.all(flipped == x[:, :, ::-1], axis=(1, 2, 3))
  is_same = jnp.all(flipped == x, axis=(1, 2, 3))
  assert bool(jnp.all(is_flip | is_same)) and 0 < int(is_flip.sum()) < 32
  cropped = np.asarray(data.augment(x, keys, random_crop=True, random_flip=False))
  padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(32):
    assert any(np.array_equal(cropped[i], padded[i, dy:dy + 8, dx:dx + 8])
               for dy in range(9) for dx in range(9))


def test_training_from_records_matches_training_from_memory(tmp_path):
  """Same batches, same parameters bit for bit, whichever way the training split is read."""
  from robust_jax import models  # pylint: disable=g-import-not-at-top
  from robust_jax import parallel  # pylint: disable=g-import-not-at-top
  from robust_jax.training import loop  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  _write_idx_dataset(tmp_path / 'src')
  config = helpers.quick_config(**{'model.name': 'small_cnn', 'defense.name': 'standard'})
  params = {}
  for mode in ('memory', 'records'):
    cfg = _cfg('fashion_mnist', tmp_path / 'tfds', tmp_path / 'src')
    with cfg.unlocked():
      cfg.train_read = mode
    ds = data.load(cfg)
    model = models.build(config.model, num_classes=10, mean=ds.mean, std=ds.std)
    fitted = loop.fit(config, str(tmp_path / mode), ds, model, parallel.make_mesh(),
                      progress=False)
    params[mode] = jax.tree.leaves(jax.device_get(fitted.state.params))
  assert ds.train_images.records.reads == config.train.steps * config.train.batch_size
  for a, b in zip(params['memory'], params['records']):
    np.testing.assert_array_equal(a, b)
