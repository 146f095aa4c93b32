"""Reading a prepared dataset's split (TFDS array_record files): whole into host memory, or row by
row from disk.

    images, labels = records.read_split(builder, 'test')     # uint8[N,H,W,C], int32[N]
    train = records.Records(builder, 'train', (32, 32, 3))   # nothing read yet
    x, y = train.column('image'), train.column('label')      # array-likes over the split
    x[np.array([5, 17])]                                     # reads just those two records

`builder` is a prepared TFDS builder (sources.prepare): our offline builders (idx_builder,
cifar_builder) store raw image bytes, decoded here with idx_builder.decode_records; the TFDS
catalogue's are decoded by TFDS. `Records` lets each host of a multi-host run read only its share
of every training batch (data.train_read='records', sources.load).
"""

import numpy as np
import tensorflow_datasets as tfds

from robust_jax.data import cifar_builder
from robust_jax.data import idx_builder

_CHUNK = 10_000  # records decoded per `__getitems__` call
# Builders whose records are raw bytes, read with idx_builder.decode_records.
RAW_BUILDERS = (idx_builder.IdxImages, cifar_builder.CifarImages)


def read_split(builder, split):
  """(uint8[N,H,W,C], int32[N]): the whole `split` of the prepared `builder`, in memory."""
  if isinstance(builder, RAW_BUILDERS):
    return _read_idx_split(builder, split)
  return _read_tfds_split(builder, split)


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


class Records:
  """Random access to one split's records on disk (array_record through `tfds.data_source`).

  `read(idx)` decodes just the records `idx` (one call for a whole batch); the last batch read is
  kept, so that a batch's images and labels (two `RecordColumn`s) cost one read.
  """

  def __init__(self, builder, split, image_shape):
    self._idx_format = isinstance(builder, RAW_BUILDERS)
    method = (tfds.decode.DeserializeMethod.RAW_BYTES if self._idx_format
              else tfds.decode.DeserializeMethod.DESERIALIZE_AND_DECODE)
    self._source = builder.as_data_source(split=split, deserialize_method=method)
    self.size = len(self._source)
    self.image_shape = tuple(image_shape)
    self._last = (None, None)
    self.reads = 0  # records decoded so far (tests check a host reads only its rows)

  def read(self, idx):
    """(uint8[k,H,W,C], int32[k]) of the records at `idx` (ints in [0, size))."""
    idx = np.asarray(idx, np.int64).reshape(-1)
    key = idx.tobytes()
    if self._last[0] == key:
      return self._last[1]
    if idx.size and (idx.min() < 0 or idx.max() >= self.size):
      raise IndexError(f'record index out of range [0, {self.size})')
    examples = self._source.__getitems__(idx.tolist())
    self.reads += len(examples)
    if self._idx_format:
      out = idx_builder.decode_records(examples, self.image_shape)
    else:
      out = (np.stack([e['image'] for e in examples]).astype(np.uint8).reshape(
          (len(examples),) + self.image_shape),
             np.array([e['label'] for e in examples], np.int32))
    self._last = (key, out)
    return out

  def column(self, field):
    return RecordColumn(self, field, 0, self.size)


class RecordColumn:
  """An array-like over one field ('image' or 'label') of `Records`, rows [start, stop).

  Indexing with an int array (or an int) reads those rows from disk; a slice gives another
  column over fewer rows (nothing is read); `np.asarray` reads them all.
  """

  def __init__(self, records, field, start, stop):
    self._records, self._field, self._start, self._stop = records, field, start, stop
    item = records.image_shape if field == 'image' else ()
    self.shape = (stop - start,) + tuple(item)
    self.dtype = np.dtype(np.uint8 if field == 'image' else np.int32)
    self.ndim = len(self.shape)

  def __len__(self):
    return self.shape[0]

  @property
  def records(self):
    return self._records

  def __getitem__(self, key):
    if isinstance(key, slice):
      start, stop, step = key.indices(len(self))
      if step != 1:
        return self[np.arange(start, stop, step)]
      return RecordColumn(self._records, self._field, self._start + start,
                          self._start + max(start, stop))
    idx = np.asarray(key)
    if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
      raise TypeError(f'RecordColumn takes int indices or a slice, not {idx.dtype}.')
    idx = np.where(idx < 0, idx + len(self), idx)
    if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
      raise IndexError(f'index out of range for {len(self)} rows')
    images, labels = self._records.read(self._start + idx.reshape(-1))
    out = images if self._field == 'image' else labels
    return out.reshape(idx.shape + out.shape[1:])

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self[np.arange(len(self))]
    return out if dtype is None else out.astype(dtype)
