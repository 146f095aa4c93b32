"""CIFAR-10 offline: both source formats prepared through TFDS, checks, errors, the test split."""

import hashlib
import json
import os
import pickle

import ml_collections
import numpy as np
import pytest

from robust_jax import data
from robust_jax import report
from robust_jax.tables import layouts
from robust_jax.data import cifar_builder
from robust_jax.data import sources

SHARED = sources.shared_copy('cifar10')
PY_N = 20    # images per python-format batch (2 per class)
PNG_ROWS = 10  # images per png-format file
PNG_TRAIN = 3  # png training files (then one test file)


def _cfg(data_dir, source_dir=''):
  return ml_collections.ConfigDict(dict(name='cifar10', data_dir=str(data_dir),
                                        source_dir=str(source_dir)))


@pytest.fixture(autouse=True)
def tiny_layout(monkeypatch, tmp_path):
  """Tiny synthetic copies: fewer images per file; no default folder unless a test sets one."""
  monkeypatch.setattr(cifar_builder, 'PY_BATCH_SIZE', PY_N)
  monkeypatch.setattr(cifar_builder, 'PNG_TRAIN_FILES', PNG_TRAIN)
  monkeypatch.setattr(cifar_builder, 'PNG_SIZES', {'train': PNG_TRAIN * PNG_ROWS,
                                                   'test': PNG_ROWS})
  monkeypatch.setitem(sources.DATASETS['cifar10'], 'source_dir', str(tmp_path / 'no_default'))
  monkeypatch.setattr(sources, 'network_reachable', lambda *a, **k: False)


def _images(rng, n):
  return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _write_python(folder, seed=0, protocol=2):
  """A tiny official-format copy in folder/cifar-10-batches-py; returns the expected arrays."""
  folder = os.path.join(folder, cifar_builder.PY_FOLDER)
  os.makedirs(folder)
  rng = np.random.default_rng(seed)
  out = {}
  for split, names in (('train', cifar_builder.PY_TRAIN_FILES), ('test', ['test_batch'])):
    xs, ys = [], []
    for name in names:
      x, y = _images(rng, PY_N), rng.permutation(np.arange(PY_N) % 10)
      # Channel-planar rows, written independently of the reader's transpose.
      planar = np.stack([x[..., ch].reshape(PY_N, 1024) for ch in range(3)], 1).reshape(PY_N, -1)
      batch = {b'batch_label': b'synthetic', b'labels': [int(v) for v in y], b'data': planar,
               b'filenames': [b'f%d.png' % i for i in range(PY_N)]}
      with open(os.path.join(folder, name), 'wb') as f:
        pickle.dump(batch, f, protocol=protocol)
      xs.append(x), ys.append(y)
    out[split] = (np.concatenate(xs), np.concatenate(ys).astype(np.int32))
  meta = {b'num_cases_per_batch': PY_N, b'num_vis': 3072,
          b'label_names': [n.encode() for n in cifar_builder.CLASS_NAMES]}
  with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
    pickle.dump(meta, f, protocol=protocol)
  return out


def _write_png(folder, seed=0, sums=True, rgba_file=1):
  """A tiny png-format copy (PNG_TRAIN + 1 files of PNG_ROWS rows); returns the expected arrays."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(folder)
  rng = np.random.default_rng(seed)
  n_train = PNG_TRAIN * PNG_ROWS
  x = _images(rng, n_train + PNG_ROWS)
  y = np.concatenate([rng.permutation(np.arange(n_train) % 10), rng.integers(0, 10, PNG_ROWS)])
  for i in range(PNG_TRAIN + 1):
    rows = x[i * PNG_ROWS:(i + 1) * PNG_ROWS].reshape(PNG_ROWS, 1024, 3)  # (r, c) -> r*32+c
    if i == rgba_file:
      rows = np.concatenate([rows, np.full((PNG_ROWS, 1024, 1), 255, np.uint8)], -1)
    Image.fromarray(rows).save(os.path.join(folder, cifar_builder.png_file(i)))
  with open(os.path.join(folder, 'cifar10_labels.json'), 'w') as f:
    json.dump({'labels': [int(v) for v in y]}, f)
  if sums:
    lines = [f'{hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()}  {n}'
             for n in sorted(os.listdir(folder))]
    with open(os.path.join(folder, 'SHA256SUMS'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  y = y.astype(np.int32)
  return {'train': (x[:n_train], y[:n_train]), 'test': (x[n_train:], y[n_train:])}


def _assert_dataset(ds, arrays):
  for split in ('train', 'test'):
    np.testing.assert_array_equal(getattr(ds, f'{split}_images'), arrays[split][0])
    np.testing.assert_array_equal(getattr(ds, f'{split}_labels'), arrays[split][1])
  assert ds.test_images.dtype == np.uint8 and ds.test_labels.dtype == np.int32
  assert ds.num_classes == 10 and ds.test_size == 10_000


def _prepared(data_dir):
  root = os.path.join(data_dir, 'cifar_images')
  return sorted(d for d in os.listdir(root) if not d.startswith('.')) if os.path.isdir(root) else []


# The two formats, prepared and read back exactly.

@pytest.mark.parametrize('protocol', [2, 4])  # the official files are protocol 2
def test_python_format_roundtrip_and_reuse(tmp_path, protocol):
  arrays = _write_python(tmp_path / 'src', protocol=protocol)
  _assert_dataset(data.load(_cfg(tmp_path / 'tfds', tmp_path / 'src')), arrays)
  assert _prepared(tmp_path / 'tfds') == ['cifar10']
  # The folder itself works too; a later load without source_dir reuses the preparation.
  _assert_dataset(data.load(_cfg(tmp_path / 'tfds', tmp_path / 'src' / 'cifar-10-batches-py')),
                  arrays)
  _assert_dataset(data.load(_cfg(tmp_path / 'tfds')), arrays)


def test_png_format_roundtrip_records_mode_and_checksums(tmp_path):
  arrays = _write_png(tmp_path / 'src')
  assert len(cifar_builder.verify_checksums(str(tmp_path / 'src'))) == PNG_TRAIN + 2
  _assert_dataset(data.load(_cfg(tmp_path / 'tfds', tmp_path / 'src')), arrays)
  assert _prepared(tmp_path / 'tfds') == ['cifar10_test1000']
  cfg = _cfg(tmp_path / 'tfds', tmp_path / 'src')
  cfg.train_read = 'records'
  ds = data.load(cfg)
  rows = np.array([3, 0, 29])
  np.testing.assert_array_equal(ds.train_images[rows], arrays['train'][0][rows])


def test_default_folder_is_used_and_an_explicit_one_wins(tmp_path, monkeypatch):
  png = _write_png(tmp_path / 'shared')
  monkeypatch.setitem(sources.DATASETS['cifar10'], 'source_dir', str(tmp_path / 'shared'))
  _assert_dataset(data.load(_cfg(tmp_path / 'tfds')), png)
  py = _write_python(tmp_path / 'mine', seed=1)
  _assert_dataset(data.load(_cfg(tmp_path / 'tfds', tmp_path / 'mine')), py)
  # Once the full official version is prepared, it is preferred to the default folder.
  _assert_dataset(data.load(_cfg(tmp_path / 'tfds')), py)


def test_shared_copy_only_beside_a_checkout(tmp_path, monkeypatch):
  repo = tmp_path / 'clone'
  (tmp_path / 'shared' / 'datasets' / 'cifar10').mkdir(parents=True)
  repo.mkdir()
  monkeypatch.setattr(sources, 'REPO_ROOT', str(repo))
  assert sources.shared_copy('cifar10') == ''  # not a checkout (an installed package)
  (repo / 'pyproject.toml').write_text('')
  assert sources.shared_copy('cifar10') == str(tmp_path / 'shared' / 'datasets' / 'cifar10')
  assert sources.shared_copy('cifar100') == ''


# Missing and damaged files are named; nothing is left prepared.

@pytest.mark.parametrize('fmt,name', [('python', 'data_batch_3'), ('python', 'batches.meta'),
                                      ('png', 'cifar10_batch_2.png'),
                                      ('png', 'cifar10_labels.json')])
def test_missing_file_is_named(tmp_path, fmt, name):
  if fmt == 'python':
    _write_python(tmp_path / 'src')
    os.remove(tmp_path / 'src' / 'cifar-10-batches-py' / name)
  else:
    _write_png(tmp_path / 'src', sums=False)
    os.remove(tmp_path / 'src' / name)
  with pytest.raises(data.DatasetUnavailableError, match=f'lacks .*{name}'):
    data.load(_cfg(tmp_path / 'tfds', tmp_path / 'src'))
  assert not any('1.0.0' in d for _, d, _ in os.walk(tmp_path / 'tfds'))


def _flip_byte(path, offset):
  raw = bytearray(open(path, 'rb').read())
  raw[offset] ^= 0xFF
  open(path, 'wb').write(bytes(raw))


def _truncate(path):
  raw = open(path, 'rb').read()
  open(path, 'wb').write(raw[:len(raw) // 2])


@pytest.mark.parametrize('case,name,match', [
    ('png_checksum', 'cifar10_batch_1.png', 'damaged: SHA-256'),
    ('png_truncated', 'cifar10_batch_0.png', 'damaged or not a PNG'),
    ('png_labels', 'cifar10_labels.json', 'expected 40 labels'),
    ('py_truncated', 'data_batch_2', 'damaged or not a CIFAR-10 python batch'),
    ('py_short', 'test_batch', 'holds 19 images, expected 20'),
])
def test_damaged_file_is_named(tmp_path, case, name, match):
  if case.startswith('png'):
    _write_png(tmp_path / 'src', sums=case == 'png_checksum')
    path = tmp_path / 'src' / name
  else:
    _write_python(tmp_path / 'src')
    path = tmp_path / 'src' / 'cifar-10-batches-py' / name
  if case == 'png_checksum':
    _flip_byte(path, os.path.getsize(path) // 2)
  elif case == 'png_labels':
    path.write_text(json.dumps({'labels': [0] * 39}))
  elif case == 'py_short':
    batch = cifar_builder.restricted_load(path.read_bytes())
    batch[b'data'], batch[b'labels'] = batch[b'data'][:19], batch[b'labels'][:19]
    path.write_bytes(pickle.dumps(batch, protocol=2))
  else:
    _truncate(path)
  with pytest.raises(data.DatasetUnavailableError, match=match) as e:
    data.load(_cfg(tmp_path / 'tfds', tmp_path / 'src'))
  assert str(path) in str(e.value)
  assert not any('1.0.0' in d for _, d, _ in os.walk(tmp_path / 'tfds'))


def test_unbalanced_or_out_of_range_labels(tmp_path):
  _write_python(tmp_path / 'src')
  path = tmp_path / 'src' / 'cifar-10-batches-py' / 'data_batch_1'
  batch = cifar_builder.restricted_load(path.read_bytes())
  batch[b'labels'][0] = 10
  path.write_bytes(pickle.dumps(batch, protocol=2))
  with pytest.raises(data.DatasetUnavailableError, match=r'data_batch_1: labels must be'):
    data.load(_cfg(tmp_path / 'tfds', tmp_path / 'src'))
  batch[b'labels'] = [0] * PY_N
  path.write_bytes(pickle.dumps(batch, protocol=2))
  with pytest.raises(data.DatasetUnavailableError, match='images per class'):
    data.load(_cfg(tmp_path / 'tfds', tmp_path / 'src'))


# The restricted unpickler.

class _Exec:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (exec, (f'open({str(self.path)!r}, "w").write("ran")',))


class _System:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, (f'touch {self.path}',))


@pytest.mark.parametrize('evil', [_Exec, _System])
def test_restricted_unpickler_rejects_code_and_runs_nothing(tmp_path, evil):
  marker = tmp_path / 'ran'
  payload = pickle.dumps({b'data': evil(marker), b'labels': []}, protocol=2)
  assert b'exec' in payload or b'system' in payload
  with pytest.raises(pickle.UnpicklingError, match='not allowed'):
    cifar_builder.restricted_load(payload)
  assert not marker.exists()
  # As a batch file: the error names the file, and still nothing ran.
  _write_python(tmp_path / 'src')
  path = tmp_path / 'src' / 'cifar-10-batches-py' / 'data_batch_4'
  path.write_bytes(payload)
  with pytest.raises(data.DatasetUnavailableError, match=f'{path}.*not allowed'):
    data.load(_cfg(tmp_path / 'tfds', tmp_path / 'src'))
  assert not marker.exists()


def test_restricted_unpickler_reads_numpy_and_plain_values():
  value = {b'data': np.arange(12, dtype=np.uint8).reshape(3, 4), b'labels': [1, 2, 3],
           b'name': b'x', 'text': 'y', 'f': 1.5, 't': (None, True)}
  for protocol in (2, 3, 4):  # (5 stores arrays through _frombuffer, which is not allowed)
    out = cifar_builder.restricted_load(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(out.pop(b'data'), value[b'data'])
    assert out == {k: v for k, v in value.items() if k != b'data'}


# No CIFAR-10 anywhere: what to do.

def test_no_cifar10_anywhere_says_where_to_put_it(tmp_path):
  with pytest.raises(data.DatasetUnavailableError) as e:
    data.load(_cfg(tmp_path / 'tfds'))
  msg = str(e.value)
  for part in ('offline', 'cifar-10-batches-py', 'data_batch_1', '--config.data.source_dir='):
    assert part in msg
  (tmp_path / 'empty').mkdir()
  for folder, why in (('empty', 'holds no CIFAR-10 files'), ('none', 'does not exist')):
    with pytest.raises(data.DatasetUnavailableError, match=why + '.*cifar-10-batches-py'):
      data.load(_cfg(tmp_path / 'tfds', tmp_path / folder))


# The test split's size in results, reports and tables.

def test_test_split_notes():
  assert data.test_split(1000, 10_000) == {
      'examples': 1000, 'of': 10_000, 'note': 'first 1,000 test images (of 10,000)'}
  assert data.test_split(10_000, 10_000)['note'] == 'all 10,000 test images'
  assert data.test_split(64, 0)['note'] == 'first 64 test images'


def test_reports_and_tables_say_which_test_images_ran():
  results = {'num_examples': 1000, 'clean_accuracy': 0.5, 'attacks': {},
             'worst_case_accuracy': 0.5, 'worst_case_correct': 500,
             'test_split': data.test_split(1000, 10_000)}
  assert 'On the first 1,000 test images (of 10,000).' in report.full_report(results)
  assert 'on the first 1,000 test images (of 10,000).' in report.comparison_table([('a', results)])
  assert layouts._test_cell(results) == 'first 1,000 of 10,000'  # pylint: disable=protected-access
  everything = {**results, 'num_examples': 10_000, 'test_split': data.test_split(10_000, 10_000)}
  assert 'On all 10,000 test images.' in report.full_report(everything)
  older = {k: v for k, v in results.items() if k != 'test_split'}  # results.json before it
  assert 'On the first 1,000 test images.' in report.full_report(older)
  assert layouts._test_cell(older) == '1000'  # pylint: disable=protected-access


# The shared copy on our machines (README's checks).

@pytest.mark.skipif(not SHARED, reason='no ../shared/datasets/cifar10 beside this checkout')
def test_shared_copy_gives_the_readme_checks(monkeypatch):
  monkeypatch.setattr(cifar_builder, 'PNG_TRAIN_FILES', 50)
  monkeypatch.setattr(cifar_builder, 'PNG_SIZES', {'train': 50_000, 'test': 1_000})
  assert len(cifar_builder.verify_checksums(SHARED)) == 52
  assert cifar_builder.detect_format(SHARED) == 'png'
  splits = cifar_builder.read_png(SHARED)
  (x, y), (xt, yt) = splits['train'], splits['test']
  assert x.shape == (50_000, 32, 32, 3) and xt.shape == (1_000, 32, 32, 3)
  assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
  assert yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
  assert xt[0, 0, :8, 0].tolist() == [158, 159, 165, 166, 160, 156, 162, 159]
  assert np.bincount(y).tolist() == [5000] * 10
  assert np.bincount(yt).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
  mean = x.reshape(-1, 3).mean(0) / 255
  np.testing.assert_allclose(mean, sources.DATASETS['cifar10']['mean'], atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED, reason='no ../shared/datasets/cifar10 beside this checkout')
def test_shared_copy_is_the_default_without_flags(tmp_path, monkeypatch):
  monkeypatch.setattr(cifar_builder, 'PNG_TRAIN_FILES', 50)
  monkeypatch.setattr(cifar_builder, 'PNG_SIZES', {'train': 50_000, 'test': 1_000})
  monkeypatch.setitem(sources.DATASETS['cifar10'], 'source_dir', SHARED)
  ds = data.load(_cfg(tmp_path / 'tfds'))
  assert ds.train_images.shape == (50_000, 32, 32, 3) and ds.test_images.shape == (1_000, 32, 32, 3)
  assert ds.test_labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
  assert ds.test_images[0, 0, :8, 0].tolist() == [158, 159, 165, 166, 160, 156, 162, 159]
  assert _prepared(tmp_path / 'tfds') == ['cifar10_test1000']
