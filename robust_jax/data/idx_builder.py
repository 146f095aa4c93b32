"""A TFDS builder for IDX-format image datasets (MNIST, Fashion-MNIST), prepared offline.

The IDX files (gzipped or not) are read from the *manual dir*; nothing is downloaded. Records are
written as array_record with the image stored as a raw-bytes `uint8[28,28,1]` tensor, so neither
TensorFlow nor PIL is needed to write or read them. Example order is the files' order (shuffling
disabled), so `test[:1000]` is the usual first 1,000 test images.

  builder = IdxImages(config='fashion_mnist', data_dir='/tmp/tfds')
  builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(manual_dir='/usr/share/datasets/fashion-mnist'))
  train = builder.as_data_source(split='train')   # train[0] = {'image': uint8[28,28,1], 'label': 3}

Prepared files live in `<data_dir>/idx_images/<config>/<version>/`; a later `download_and_prepare`
reuses them whatever the manual dir is.
"""

import dataclasses
import gzip
import os

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W).
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,).
# (split, file prefix) pairs; files are `<prefix>-images-idx3-ubyte[.gz]` and `-labels-idx1-`.
SPLIT_PREFIXES = (('train', 'train'), ('test', 't10k'))


class IdxFileError(ValueError):
  """An IDX file is missing, truncated or has an unexpected header."""


@dataclasses.dataclass(eq=False)
class IdxConfig(tfds.core.BuilderConfig):
  """One IDX dataset: image shape (H, W, C) and number of classes."""
  image_shape: tuple = (28, 28, 1)
  num_classes: int = 10


def find_idx_file(folder, prefix, kind):
  """The path of `<prefix>-<kind>-idxN-ubyte` in `folder` (.gz or not, '-' or '.' before idx).

  Args:
    folder: directory to look in.
    prefix: 'train' or 't10k'.
    kind: 'images' or 'labels'.
  Raises:
    IdxFileError: naming the expected file if none of the variants exists.
  """
  ndim = 3 if kind == 'images' else 1
  names = [f'{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}' for sep in '-.' for ext in ('.gz', '')]
  for name in names:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  raise IdxFileError(f'IDX file {os.path.join(folder, names[0])} not found (also tried '
                     f'{", ".join(names[1:])}).')


def read_idx(path, magic, dims=None):
  """Reads one IDX file of unsigned bytes into `uint8[N, *dims]`.

  Args:
    path: file path; read through gzip if it ends in '.gz'.
    magic: expected magic number (IMAGE_MAGIC or LABEL_MAGIC).
    dims: expected per-item dimensions, e.g. (28, 28); None for labels.
  Raises:
    IdxFileError: naming `path` if the header, the dimensions or the length is wrong.
  """
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
    raise IdxFileError(f'Cannot read IDX file {path}: {e}') from e
  ndim = magic & 0xFF
  header = 4 * (1 + ndim)
  if len(raw) < header:
    raise IdxFileError(f'IDX file {path} is truncated: {len(raw)} bytes, shorter than its header.')
  found = int.from_bytes(raw[:4], 'big')
  if found != magic:
    raise IdxFileError(f'IDX file {path} has magic number {found}, expected {magic}; the file is '
                       'corrupt or is not the expected images/labels file.')
  shape = tuple(int(d) for d in np.frombuffer(raw, '>u4', count=ndim, offset=4))
  if dims is not None and shape[1:] != tuple(dims):
    raise IdxFileError(f'IDX file {path} holds items of shape {shape[1:]}, expected {dims}.')
  size = int(np.prod(shape))
  if len(raw) - header != size:
    raise IdxFileError(f'IDX file {path} has {len(raw) - header} data bytes, header says '
                       f'{shape} = {size}; the file is truncated or corrupt.')
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_idx_split(folder, prefix, image_shape, num_classes):
  """Reads and checks one split: returns (images uint8[N,H,W,C], labels uint8[N])."""
  images_path = find_idx_file(folder, prefix, 'images')
  labels_path = find_idx_file(folder, prefix, 'labels')
  h, w, c = image_shape
  images = read_idx(images_path, IMAGE_MAGIC, (h, w) if c == 1 else (h, w, c))
  labels = read_idx(labels_path, LABEL_MAGIC)
  if len(images) != len(labels):
    raise IdxFileError(f'{images_path} holds {len(images)} images but {labels_path} holds '
                       f'{len(labels)} labels.')
  if len(labels) and labels.max() >= num_classes:
    raise IdxFileError(f'{labels_path} has label {labels.max()}, expected < {num_classes}.')
  return images.reshape((-1, h, w, c)), labels


class IdxImages(tfds.core.GeneratorBasedBuilder):
  """IDX image datasets read from the manual dir (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
      't10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in one folder and pass it as '
      '`manual_dir`. For Fashion-MNIST on Debian/Ubuntu: '
      '`sudo apt-get install -y dataset-fashion-mnist` (-> /usr/share/datasets/fashion-mnist).')
  BUILDER_CONFIGS = [
      IdxConfig(name='fashion_mnist', description='Fashion-MNIST (Xiao et al., 2017).'),
      IdxConfig(name='mnist', description='MNIST (LeCun et al., 1998).'),
  ]

  def _info(self):
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # Raw bytes: with the default encoding TFDS stores each pixel as an int64 varint,
            # and reading back is ~3x slower.
            'image': tfds.features.Tensor(shape=cfg.image_shape, dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'label': tfds.features.ClassLabel(num_classes=cfg.num_classes),
        }),
        supervised_keys=('image', 'label'),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    folder = os.fspath(dl_manager.manual_dir)
    # Read and check every file before writing anything.
    splits = {split: read_idx_split(folder, prefix, cfg.image_shape, cfg.num_classes)
              for split, prefix in SPLIT_PREFIXES}
    return {split: self._generate_examples(*arrays) for split, arrays in splits.items()}

  def _generate_examples(self, images, labels):
    for i in range(len(labels)):
      yield i, {'image': images[i], 'label': int(labels[i])}


def decode_records(records, image_shape):
  """Decodes raw IdxImages records (serialized tf.train.Example) without TFDS's per-feature code.

  Args:
    records: sequence of bytes, as read with `DeserializeMethod.RAW_BYTES`.
    image_shape: (H, W, C).
  Returns:
    (images uint8[N,H,W,C], labels int32[N]).
  """
  features = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
  images = np.frombuffer(b''.join(f['image'].bytes_list.value[0] for f in features), np.uint8)
  labels = np.fromiter((f['label'].int64_list.value[0] for f in features), np.int32,
                       count=len(features))
  return images.reshape((len(features), *image_shape)), labels
