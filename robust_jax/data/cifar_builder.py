"""A TFDS builder for CIFAR-10 from local files, prepared offline (no network).

The manual dir holds one of two formats:

* **python**: the official python version, `cifar-10-batches-py/` (the folder itself or a folder
  holding it): `data_batch_1` .. `data_batch_5`, `test_batch`, `batches.meta`, pickled dicts with
  b'data' uint8[10000, 3072] (channel-planar: R plane, G plane, B plane, each 32x32 row-major) and
  b'labels' (10,000 ints). Prepared as config `cifar10`: 50,000 train and all 10,000 test images.
  The pickles are read by `RestrictedUnpickler`, which builds only numpy arrays and plain Python
  values: a file that asks for anything else (e.g. a function to call) is rejected unread.
* **png**: a lossless PNG export (the shared copy on our machines): `cifar10_batch_{0..50}.png`,
  51 RGB(A) PNGs 1024 pixels wide, row i = one 32x32x3 image (pixel (r, c) at column r*32 + c);
  batches 0-49 are the training set in the official order, batch 50 the official
  `test_batch[0:1000]`; `cifar10_labels.json` = {"labels": [51,000 ints]}. Prepared as config
  `cifar10_test1000`: 50,000 train and the first 1,000 test images only.

Checks. No SHA-256 of the official python files is known offline, so the python format is checked
by structure: each file's keys, shapes and dtype, labels in [0, 10), 10,000 images per batch,
5,000 training and 1,000 test images per class, the ten class names. The png format is checked
against the `SHA256SUMS` file beside it (`sha256sum -c` format) when the folder has one, and by
structure (image sizes, number of labels, 5,000 training images per class) always. A missing or
damaged file raises `CifarFileError` naming it, before anything is written.

Records are stored like `idx_builder.IdxImages`'s (raw-bytes uint8[32,32,3] image, 'label'), in
file order (no shuffling), so `idx_builder.decode_records` reads them back and `test[:1000]` is
the official first 1,000 test images in both configs. PNGs are decoded with Pillow (a dependency
of matplotlib, pinned in requirements.txt); no TensorFlow is needed.
"""

import dataclasses
import hashlib
import io
import json
import os
import pickle

import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck')
IMAGE_SHAPE = (32, 32, 3)
PY_FOLDER = 'cifar-10-batches-py'
PY_TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
PY_TEST_FILE = 'test_batch'
PY_META_FILE = 'batches.meta'
PNG_TRAIN_FILES = 50  # cifar10_batch_0..49.png; cifar10_batch_50.png is the test batch
PNG_LABELS_FILE = 'cifar10_labels.json'
CHECKSUMS_FILE = 'SHA256SUMS'
# Expected sizes (images per file, per split); the tests shrink these for tiny synthetic copies.
PY_BATCH_SIZE = 10_000
PNG_SIZES = {'train': 50_000, 'test': 1_000}
FORMAT_CONFIG = {'python': 'cifar10', 'png': 'cifar10_test1000'}


class CifarFileError(ValueError):
  """A CIFAR-10 file is missing, damaged or not what the format says."""


def png_file(i):
  return f'cifar10_batch_{i}.png'


# The python format's pickles.

def _allowed_globals():
  import _codecs  # pylint: disable=g-import-not-at-top
  reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, whatever its module
  allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
             ('_codecs', 'encode'): _codecs.encode}
  for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    allowed[(module, '_reconstruct')] = reconstruct
  return allowed


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles plain values and numpy arrays only (what the CIFAR python files hold).

  `find_class` allows numpy's array reconstruction (`_reconstruct`, `ndarray`, `dtype`) and
  `_codecs.encode` (how protocol-2 pickles spell bytes); any other global, e.g. `builtins.exec`
  or `os.system`, raises `pickle.UnpicklingError` before it is looked up, so it never runs.
  """

  _ALLOWED = None

  def find_class(self, module, name):
    if RestrictedUnpickler._ALLOWED is None:
      RestrictedUnpickler._ALLOWED = _allowed_globals()
    try:
      return RestrictedUnpickler._ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f'{module}.{name} is not allowed in a CIFAR-10 file (only numpy arrays and plain '
          'values are)') from None


def restricted_load(data):
  """Unpickles `data` (bytes) with `RestrictedUnpickler`; bytes keys stay bytes."""
  return RestrictedUnpickler(io.BytesIO(data), encoding='bytes').load()


def _read(path):
  if not os.path.isfile(path):
    raise CifarFileError(f'CIFAR-10 file {path} not found.')
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise CifarFileError(f'Cannot read CIFAR-10 file {path}: {e}') from e


def _unpickle(path):
  try:
    obj = restricted_load(_read(path))
  except CifarFileError:
    raise
  except Exception as e:  # noqa: BLE001  # Truncated or damaged pickles fail in many ways.
    raise CifarFileError(f'CIFAR-10 file {path} is damaged or not a CIFAR-10 python batch: '
                         f'{type(e).__name__}: {e}') from e
  if not isinstance(obj, dict):
    raise CifarFileError(f'CIFAR-10 file {path} holds a {type(obj).__name__}, not a dict.')
  return obj


def python_folder(folder):
  """`folder` or `folder/cifar-10-batches-py`, whichever holds the python format's files."""
  nested = os.path.join(folder, PY_FOLDER)
  return nested if os.path.isdir(nested) else folder


def read_python_batch(path):
  """Reads one python-format batch: (uint8[N,32,32,3], uint8[N]); checks its structure."""
  batch = _unpickle(path)
  data, labels = batch.get(b'data'), batch.get(b'labels')
  if not isinstance(data, np.ndarray) or labels is None:
    raise CifarFileError(f'CIFAR-10 file {path} lacks b"data" (an array) or b"labels".')
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
    raise CifarFileError(f'CIFAR-10 file {path}: data is {data.dtype}{list(data.shape)}, '
                         'expected uint8[N, 3072].')
  if len(data) != PY_BATCH_SIZE:
    raise CifarFileError(f'CIFAR-10 file {path} holds {len(data)} images, expected '
                         f'{PY_BATCH_SIZE}; the file is truncated or not an official batch.')
  if not all(isinstance(y, int) and 0 <= y < 10 for y in labels) or len(labels) != len(data):
    raise CifarFileError(f'CIFAR-10 file {path}: labels must be {len(data)} ints in [0, 10).')
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planar CHW -> HWC
  return np.ascontiguousarray(images), np.asarray(labels, np.uint8)


def read_python(folder):
  """{'train': (x, y), 'test': (x, y)} from the official python version in `folder`."""
  folder = python_folder(folder)
  missing = [n for n in (*PY_TRAIN_FILES, PY_TEST_FILE, PY_META_FILE)
             if not os.path.isfile(os.path.join(folder, n))]
  if missing:
    raise CifarFileError(f'CIFAR-10 python version in {folder} lacks '
                         f'{", ".join(os.path.join(folder, n) for n in missing)}.')
  meta_path = os.path.join(folder, PY_META_FILE)
  names = _unpickle(meta_path).get(b'label_names')
  if [n.decode() if isinstance(n, bytes) else n for n in names or []] != list(CLASS_NAMES):
    raise CifarFileError(f'CIFAR-10 file {meta_path}: label_names {names!r} are not the ten '
                         'CIFAR-10 classes.')
  train = [read_python_batch(os.path.join(folder, n)) for n in PY_TRAIN_FILES]
  splits = {'train': tuple(np.concatenate(a) for a in zip(*train)),
            'test': read_python_batch(os.path.join(folder, PY_TEST_FILE))}
  _check_balanced(splits['train'][1], os.path.join(folder, 'data_batch_*'))
  _check_balanced(splits['test'][1], os.path.join(folder, PY_TEST_FILE))
  return splits


def _check_balanced(labels, where):
  counts = np.bincount(labels, minlength=10)
  if len(set(counts.tolist())) != 1:
    raise CifarFileError(f'CIFAR-10 files {where}: images per class {counts.tolist()}, expected '
                         'the same number for each class.')


# The png format.

def verify_checksums(folder):
  """Checks every file `folder/SHA256SUMS` lists; returns the names checked ([] without one)."""
  sums_path = os.path.join(folder, CHECKSUMS_FILE)
  if not os.path.isfile(sums_path):
    return []
  checked = []
  for line in _read(sums_path).decode('utf-8', 'replace').splitlines():
    if not line.strip():
      continue
    digest, _, name = line.partition(' ')
    name = name.strip().lstrip('*')
    path = os.path.join(folder, name)
    if len(digest) != 64 or not name or os.path.dirname(name):
      raise CifarFileError(f'{sums_path}: cannot parse the line {line!r}.')
    found = hashlib.sha256(_read(path)).hexdigest()
    if found != digest.lower():
      raise CifarFileError(f'CIFAR-10 file {path} is damaged: SHA-256 {found}, {sums_path} says '
                           f'{digest}.')
    checked.append(name)
  return checked


def read_png_batch(path):
  """uint8[rows,32,32,3] from one png-format file (1024 px wide, one image per row)."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CifarFileError(f'Reading {path} needs Pillow (`pip install pillow`, pinned in '
                         'requirements.txt), which is not installed.') from e
  try:
    with Image.open(io.BytesIO(_read(path))) as image:
      image.load()
      pixels = np.asarray(image)
  except CifarFileError:
    raise
  except Exception as e:  # noqa: BLE001  # Pillow raises many kinds for a damaged file.
    raise CifarFileError(f'CIFAR-10 file {path} is damaged or not a PNG: '
                         f'{type(e).__name__}: {e}') from e
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[1:] not in ((1024, 3),
                                                                             (1024, 4)):
    raise CifarFileError(f'CIFAR-10 file {path} is {pixels.dtype}{list(pixels.shape)} (rows, '
                         'width, channels), expected an 8-bit RGB(A) image 1024 pixels wide.')
  if pixels.shape[2] == 4:
    if (pixels[..., 3] != 255).any():
      raise CifarFileError(f'CIFAR-10 file {path} has transparent pixels (alpha below 255).')
    pixels = pixels[..., :3]
  return np.ascontiguousarray(pixels.reshape(-1, 32, 32, 3))


def read_png(folder):
  """{'train': (x, y), 'test': (x, y)} from the png format in `folder` (test: 1,000 images)."""
  names = [png_file(i) for i in range(PNG_TRAIN_FILES + 1)] + [PNG_LABELS_FILE]
  missing = [os.path.join(folder, n) for n in names if not os.path.isfile(os.path.join(folder, n))]
  if missing:
    raise CifarFileError(f'CIFAR-10 png copy in {folder} lacks {", ".join(missing)}.')
  verify_checksums(folder)
  labels_path = os.path.join(folder, PNG_LABELS_FILE)
  try:
    labels = json.loads(_read(labels_path))['labels']
  except (ValueError, KeyError, TypeError) as e:
    raise CifarFileError(f'CIFAR-10 file {labels_path} is damaged: expected JSON '
                         f'{{"labels": [ints]}} ({type(e).__name__}: {e}).') from e
  total = PNG_SIZES['train'] + PNG_SIZES['test']
  if (not isinstance(labels, list) or len(labels) != total
      or not all(isinstance(y, int) and 0 <= y < 10 for y in labels)):
    raise CifarFileError(f'CIFAR-10 file {labels_path}: expected {total} labels in [0, 10), '
                         f'found {len(labels) if isinstance(labels, list) else labels!r}.')
  labels = np.asarray(labels, np.uint8)
  train = [read_png_batch(os.path.join(folder, png_file(i))) for i in range(PNG_TRAIN_FILES)]
  test = read_png_batch(os.path.join(folder, png_file(PNG_TRAIN_FILES)))
  x_train = np.concatenate(train)
  for split, x, files in (('train', x_train, f'{png_file(0)} .. {png_file(PNG_TRAIN_FILES - 1)}'),
                          ('test', test, png_file(PNG_TRAIN_FILES))):
    if len(x) != PNG_SIZES[split]:
      raise CifarFileError(f'CIFAR-10 files {os.path.join(folder, files)} hold {len(x)} {split} '
                           f'images, expected {PNG_SIZES[split]}.')
  y_train = labels[:len(x_train)]
  _check_balanced(y_train, labels_path + ' (training labels)')
  return {'train': (x_train, y_train), 'test': (test, labels[len(x_train):])}


def detect_format(folder):
  """'python', 'png' or None: which CIFAR-10 format `folder` holds (judged by file names)."""
  py = python_folder(folder)
  if any(os.path.exists(os.path.join(py, n)) for n in (*PY_TRAIN_FILES, PY_TEST_FILE,
                                                        PY_META_FILE)):
    return 'python'
  if os.path.exists(os.path.join(folder, PNG_LABELS_FILE)) or os.path.exists(
      os.path.join(folder, png_file(0))):
    return 'png'
  return None


READERS = {'python': read_python, 'png': read_png}


@dataclasses.dataclass(eq=False)
class CifarConfig(tfds.core.BuilderConfig):
  """One source format of CIFAR-10; image_shape and num_classes as IdxConfig's."""
  source_format: str = 'python'
  image_shape: tuple = IMAGE_SHAPE
  num_classes: int = 10


class CifarImages(tfds.core.GeneratorBasedBuilder):
  """CIFAR-10 read from the manual dir (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Pass as `manual_dir` the folder of the official CIFAR-10 python version '
      '(cifar-10-batches-py: data_batch_1 .. data_batch_5, test_batch, batches.meta) or of the '
      'png copy (cifar10_batch_0..50.png, cifar10_labels.json).')
  BUILDER_CONFIGS = [
      CifarConfig(name='cifar10', source_format='python',
                  description='CIFAR-10 (Krizhevsky, 2009) from the official python version.'),
      CifarConfig(name='cifar10_test1000', source_format='png',
                  description='CIFAR-10 from the png copy: all 50,000 training images, the '
                  'first 1,000 test images.'),
  ]

  def _info(self):
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=cfg.image_shape, dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    # Read and check every file before writing anything.
    splits = READERS[self.builder_config.source_format](os.fspath(dl_manager.manual_dir))
    return {split: self._generate_examples(*arrays) for split, arrays in splits.items()}

  def _generate_examples(self, images, labels):
    for i in range(len(labels)):
      yield i, {'image': images[i], 'label': int(labels[i])}
