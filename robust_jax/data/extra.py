"""Additional training data (generated images, say) mixed into every training batch.

`config.data.extra` (configs/default.py):

  path       '' (none); an .npz file; an .array_record file; or a folder of .npz or of
             .array_record shards, read in sorted name order as one set.
  fraction   the share of each training batch drawn from it, in [0, 1): 0.7 in Gowal et al.,
             Rebuffi et al. and Wang et al. (30% real, 70% generated); 0 leaves it unused.
  synthetic  > 0: instead of `path`, this many synthetic images made here from the real
             training set (noisy, randomly flipped copies of random training images with their
             labels) and cached next to the prepared datasets; a stand-in for smoke runs and
             tests, NOT anyone's generated data (scripts/make_synthetic_extra.py writes one to
             a file).

Formats. npz: arrays `image` uint8[N,H,W,C] and `label` int[N] (the layout the generated sets of
Rebuffi et al. and Wang et al. are released in). A member stored uncompressed (np.savez) is
memory-mapped, so a batch reads only its rows from disk; a compressed one (np.savez_compressed)
cannot be and is read whole into memory, once (logged; re-save large sets with np.savez).
array_record: one record per example, a serialized tf.train.Example with `image` (the H*W*C
uint8 bytes) and `label` (int64), the format of robust_jax's own prepared datasets
(`write_array_record` writes it); records are read by random access.

Batches (robust_jax/data/batching.py): each training batch holds round(B * (1 - fraction)) real
rows and the rest extra rows, spread evenly over the batch; each stream has its own
deterministic per-epoch order, a pure function of (seed, step), so a resumed run reads exactly
what an uninterrupted one would and each host reads only its own rows.

Epochs. With extra data an epoch is still floor(N_real / B) steps, where B is the whole batch:
the papers count training length that way (DeepMind's code and Wang et al.'s turn epochs into
steps with the real training set's size and the full batch), so `train.epochs`, the warm-up and
the schedule mean the same number of steps with or without extra data. Within it the real rows
pass over only (1 - fraction) of the real set; each stream starts a new permutation when it has
gone through its own set.

  extra = open_extra(config.data.extra, image_shape=(32, 32, 3), num_classes=10)
  images, labels = extra.read(np.array([5, 17, 3]))   # uint8[3,32,32,3], int32[3]
"""

import os
import struct
import zipfile

import numpy as np
from absl import logging
from tensorflow_datasets.proto import tf_example_pb2

from robust_jax import errors
from robust_jax.data import batching
from robust_jax.data import idx_builder

FORMATS = ('.npz', '.array_record')
_LABEL_CHUNK = 1 << 22  # labels checked this many at a time


class ExtraDataError(errors.ConfigError):
  """The additional data cannot be used as configured; the message says what to change."""


def _field(extra_cfg, name, default):
  return default if extra_cfg is None else extra_cfg.get(name, default)


def active(extra_cfg):
  """True when `extra_cfg` (config.data.extra, possibly absent) mixes extra data in (an unset
  path, None, counts: opening it then says what to pass)."""
  return bool(_field(extra_cfg, 'fraction', 0.0)) and (
      _field(extra_cfg, 'path', '') != '' or bool(_field(extra_cfg, 'synthetic', 0)))


def check_config(extra_cfg, batch_size=None):
  """Raises ExtraDataError on a bad `config.data.extra`: before any data is read.

  Checks the fraction, that `path` is set (a paper row leaves it unset: the papers' data is not
  shipped), names an existing file or folder of a known format, and, given the training
  `batch_size`, that each batch gets at least one row of each kind.
  """
  if extra_cfg is None:
    return
  fraction = extra_cfg.get('fraction', 0.0)
  if (not isinstance(fraction, (int, float)) or isinstance(fraction, bool)
      or not 0 <= fraction < 1):
    raise ExtraDataError(f'data.extra.fraction={fraction!r} must be a number in [0, 1): the '
                         'share of each training batch taken from the additional data (the '
                         'papers: 0.7; 0 trains on the real data only).')
  path, synthetic = extra_cfg.get('path', ''), extra_cfg.get('synthetic', 0)
  if not isinstance(synthetic, int) or isinstance(synthetic, bool) or synthetic < 0:
    raise ExtraDataError(f'data.extra.synthetic={synthetic!r} must be an integer >= 0.')
  if not fraction:
    return
  if path is None and not synthetic:
    raise ExtraDataError(
        f'data.extra.path is not set, but this config takes {fraction:.0%} of each batch from '
        'additional data. Pass --config.data.extra.path=<an .npz file (image uint8[N,H,W,C], '
        'label int[N]), an .array_record file, or a folder of their shards>; for a smoke run '
        'without the data, --config.data.extra.synthetic=<N> (synthetic images, not the '
        "papers'); or --config.data.extra.fraction=0 to train on the real data only.")
  if path and synthetic:
    raise ExtraDataError(f'data.extra.path={path!r} and data.extra.synthetic={synthetic}: set '
                         'one of them (synthetic=0 reads the path).')
  if path:
    shard_paths(path)
  n_real, n_extra = batching.split_batch(batch_size, fraction) if batch_size else (1, 1)
  if not n_real or not n_extra:
    raise ExtraDataError(
        f'train.batch_size={batch_size} with data.extra.fraction={fraction} gives {n_real} real '
        f'and {n_extra} extra rows per batch; use a larger batch or a fraction that leaves at '
        'least one row of each.')


def shard_paths(path):
  """The files of the extra set at `path` (a file, or a folder's shards in name order)."""
  if not isinstance(path, str) or not os.path.exists(path):
    raise ExtraDataError(f'data.extra.path={path!r} does not exist: give an .npz file, an '
                         '.array_record file or a folder of their shards.')
  if os.path.isdir(path):
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(FORMATS))
    kinds = {os.path.splitext(f)[1] for f in files}
    if not files or len(kinds) > 1:
      why = 'holds no' if not files else 'mixes'
      raise ExtraDataError(f'data.extra.path={path!r} {why} .npz and .array_record shards: '
                           'put the shards of one format (only) in the folder.')
    return files
  if not path.endswith(FORMATS):
    raise ExtraDataError(
        f'data.extra.path={path!r}: unknown format. Supported: .npz (arrays image uint8[N,H,W,C]'
        ' and label int[N]) and .array_record (tf.train.Example records with image bytes and '
        'int64 label, robust_jax.data.extra.write_array_record); convert it with np.savez.')
  return [path]


def _npz_member(path, zf, name):
  """Member `name` of the npz at `path`: memory-mapped if stored uncompressed, else read."""
  info = zf.getinfo(name + '.npy')
  if info.compress_type != zipfile.ZIP_STORED:
    logging.warning('%s: %s is compressed, so it is read whole into memory (%.1f MB); save the '
                    'set with np.savez to have it memory-mapped.', path, name,
                    info.file_size / 1e6)
    with zf.open(info) as f:
      return np.lib.format.read_array(f, allow_pickle=False)
  with open(path, 'rb') as f:
    f.seek(info.header_offset)
    header = f.read(30)
    if header[:4] != b'PK\x03\x04':
      raise ExtraDataError(f'{path}: not a valid npz (bad zip header of {name}).')
    name_len, extra_len = struct.unpack('<HH', header[26:30])
    f.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(f)
    offset = f.tell()
  if dtype.hasobject:
    raise ExtraDataError(f'{path}: {name} holds Python objects; save plain arrays.')
  return np.memmap(path, dtype=dtype, mode='r', offset=offset, shape=shape,
                   order='F' if fortran else 'C')


def _open_npz(path):
  """(images, labels) of one npz shard, memory-mapped where stored uncompressed."""
  try:
    with zipfile.ZipFile(path) as zf:
      names = [n[:-4] for n in zf.namelist() if n.endswith('.npy')]
      if 'image' not in names or 'label' not in names:
        raise ExtraDataError(f'{path} has arrays {names}; an extra-data npz needs `image` '
                             '(uint8[N,H,W,C]) and `label` (int[N]).')
      return _npz_member(path, zf, 'image'), _npz_member(path, zf, 'label')
  except zipfile.BadZipFile as e:
    raise ExtraDataError(f'{path} is not a readable npz file ({e}).') from e


def _check_arrays(path, images, labels, image_shape, num_classes):
  """Shape, dtype and label-range checks of one npz shard; errors say how to fix it."""
  shape = tuple(image_shape)
  if images.ndim == 4 and images.shape[1:] != shape and images.shape[1:] == (
      shape[2], shape[0], shape[1]):
    raise ExtraDataError(f'{path}: image has shape {images.shape} (channels first); this '
                         f'dataset needs [N,{",".join(map(str, shape))}]: save '
                         'image.transpose(0, 2, 3, 1).')
  if images.ndim != 4 or images.shape[1:] != shape:
    raise ExtraDataError(f'{path}: image has shape {images.shape}; this dataset needs '
                         f'[N,{",".join(map(str, shape))}].')
  if images.dtype != np.uint8:
    raise ExtraDataError(f'{path}: image is {images.dtype}; extra images must be uint8 in '
                         '[0, 255] (from floats in [0, 1]: (x * 255).round().astype(np.uint8)).')
  if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
    raise ExtraDataError(f'{path}: label is {labels.dtype}{list(labels.shape)}; it must be '
                         f'integers [N] with N = {images.shape[0]} (one per image).')
  for start in range(0, len(labels), _LABEL_CHUNK):
    _check_labels(path, np.asarray(labels[start:start + _LABEL_CHUNK]), num_classes, start)


def _check_labels(path, labels, num_classes, first=0):
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    i = int(bad[0])
    raise ExtraDataError(f'{path}: label {int(labels[i])} of example {first + i} is outside '
                         f'[0, {num_classes}); extra labels are class indices of this dataset.')


class ExtraSet:
  """The extra set: `size` examples over one or more shards, read by index.

  Attributes:
    size, image_shape, fraction (of each batch), path (or 'synthetic:<N>').
    reads: examples read so far (tests check that a host reads only its rows).
  """

  def __init__(self, path, fraction, image_shape, num_classes):
    self.path, self.fraction = path, float(fraction)
    self.image_shape, self.num_classes = tuple(image_shape), int(num_classes)
    self.reads = 0
    self._records = None
    files = shard_paths(path)
    if files[0].endswith('.array_record'):
      from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
      self._records = array_record_data_source.ArrayRecordDataSource(files)
      self.size = len(self._records)
      if not self.size:
        raise ExtraDataError(f'data.extra.path={path!r} holds no records.')
      return
    shards = [_open_npz(f) for f in files]
    for (images, labels), name in zip(shards, files):
      _check_arrays(name, images, labels, self.image_shape, self.num_classes)
    self._shards = shards
    self._starts = np.cumsum([0] + [len(s[1]) for s in shards])
    self.size = int(self._starts[-1])

  def read(self, idx):
    """(uint8[k,H,W,C], int32[k]) of the examples `idx` (ints in [0, size))."""
    idx = np.asarray(idx, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= self.size):
      raise IndexError(f'extra example index out of range [0, {self.size})')
    self.reads += idx.size
    if self._records is not None:
      return self._read_records(idx)
    images = np.empty((idx.size,) + self.image_shape, np.uint8)
    labels = np.empty(idx.size, np.int32)
    shard = np.searchsorted(self._starts, idx, side='right') - 1
    for s in np.unique(shard):
      rows = shard == s
      local = idx[rows] - self._starts[s]
      order = np.argsort(local, kind='stable')  # sorted reads from a memory map
      got = np.empty_like(order)
      got[order] = np.arange(order.size)
      s_images, s_labels = self._shards[s]
      images[rows] = np.asarray(s_images[local[order]])[got]
      labels[rows] = np.asarray(s_labels[local[order]])[got]
    return images, labels

  def _read_records(self, idx):
    records = self._records.__getitems__(idx.tolist())
    try:
      images, labels = idx_builder.decode_records(records, self.image_shape)
    except (ValueError, IndexError, KeyError) as e:
      raise ExtraDataError(
          f'{self.path}: records {idx[:4].tolist()}... are not tf.train.Examples of image bytes '
          f'(uint8{list(self.image_shape)}) and an int64 label ({e}); write the set with '
          'robust_jax.data.extra.write_array_record.') from e
    _check_labels(self.path, labels, self.num_classes)
    return images, labels


def write_array_record(path, images, labels):
  """Writes uint8[N,H,W,C] images and int labels as an .array_record file `ExtraSet` reads."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  writer = array_record_module.ArrayRecordWriter(path, 'group_size:1')
  for image, label in zip(np.asarray(images, np.uint8), np.asarray(labels)):
    example = tf_example_pb2.Example()
    example.features.feature['image'].bytes_list.value.append(image.tobytes())
    example.features.feature['label'].int64_list.value.append(int(label))
    writer.write(example.SerializeToString())
  writer.close()


def make_synthetic(images, labels, n, seed=0):
  """`n` synthetic examples: noisy (Gaussian, std 8/255), randomly flipped copies of random
  rows of `images` (uint8[N,H,W,C], read row by row) with their labels. Not generated data: a
  deterministic stand-in with the real set's shapes and classes, for smoke runs and tests."""
  gen = np.random.default_rng([seed, n])
  rows = gen.integers(0, len(labels), n)
  order = np.argsort(rows, kind='stable')
  out_images = np.empty((n,) + tuple(images.shape[1:]), np.uint8)
  out_images[order] = np.asarray(images[rows[order]])
  out_labels = np.asarray(labels[rows[order]], np.int32)[np.argsort(order)]
  noise = gen.normal(0.0, 8.0, out_images.shape)
  flip = gen.random(n) < 0.5
  out = np.clip(out_images + noise, 0, 255).round().astype(np.uint8)
  out[flip] = out[flip][:, :, ::-1]
  return out, out_labels


def _synthetic(extra_cfg, dataset, cache_dir):
  """The synthetic ExtraSet of `extra_cfg.synthetic` examples, cached as an npz in cache_dir."""
  n = extra_cfg.synthetic
  path = os.path.join(cache_dir, 'robust_jax_extra', f'synthetic_{dataset.name}_{n}.npz')
  if not os.path.exists(path):
    images, labels = make_synthetic(dataset.train_images, dataset.train_labels, n)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp.npz'
    np.savez(tmp, image=images, label=labels)
    os.replace(tmp, path)  # atomic; hosts writing it at once write the same bytes
  return ExtraSet(path, extra_cfg.fraction, dataset.train_images.shape[1:],
                  dataset.num_classes)


def open_extra(extra_cfg, dataset, cache_dir):
  """The ExtraSet `extra_cfg` (config.data.extra) names for `dataset`, or None when inactive.

  `cache_dir`: where a synthetic set is cached. Raises ExtraDataError (a ConfigError) naming the
  fix when the files are missing or hold the wrong shapes, dtypes or labels.
  """
  if not active(extra_cfg):
    return None
  check_config(extra_cfg)
  if extra_cfg.get('synthetic', 0):
    extra = _synthetic(extra_cfg, dataset, cache_dir)
  else:
    extra = ExtraSet(extra_cfg.path, extra_cfg.fraction, dataset.train_images.shape[1:],
                     dataset.num_classes)
  logging.info('Extra training data: %d examples from %s, %.0f%% of each batch.', extra.size,
               extra.path, 100 * extra.fraction)
  return extra
