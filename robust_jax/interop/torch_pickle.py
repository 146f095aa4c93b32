"""torch's `.pt` checkpoint format, read by a restricted unpickler and written as torch.save does.

    tree = torch_pickle.load('model.pt')             # nested dicts/lists of np.ndarray
    torch_pickle.save_state_dict('out.pt', weights)  # {name: array}; torch.load reads it back

(Callers use torch_files, the checkpoint API: which format a file is in, .safetensors, the state
dict inside a checkpoint; this module is the pickle format underneath it.)

Loading never runs code from the file. A `.pt` file is a pickle, and a general unpickler imports
and calls whatever the file names; this one accepts only what a checkpoint is made of: tensors
(torch's tensor and parameter rebuild functions over typed storages), ordered dicts, plain Python
containers and numbers, and numpy scalars. Any other global (a function, a class, a module) is an
`UnsafeCheckpointError` that names it. Both of torch's formats are read: the zip archive of
torch >= 1.6 (`archive/data.pkl` + one file per storage) and the older single-stream format.

Tensors come back as numpy arrays in their own dtype (bfloat16 via ml_dtypes), contiguous and
owning their memory. Views into one storage (a tensor saved with its slices) are rebuilt as copies.
Writing produces torch's zip format with only tensors in an OrderedDict, so
torch.load(path, weights_only=True) accepts it.
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

# torch's typed-storage classes -> the element dtype they hold.
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_, 'UntypedStorage': np.uint8,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class CheckpointFormatError(ValueError):
  """The file is not a checkpoint this module can read (damaged, truncated, another format)."""


class UnsafeCheckpointError(CheckpointFormatError):
  """The file's pickle names a global that a checkpoint of weights never needs."""


# --- Reading: only what a checkpoint of weights is made of. -----------------------------------

class _Storage:
  """One storage of the file: its raw bytes read on demand, viewed as `dtype`."""

  def __init__(self, read, dtype, numel, name):
    self._read, self.dtype, self.numel, self.name = read, np.dtype(dtype), numel, name
    self._array = None

  def array(self):
    if self._array is None:
      raw = self._read()
      want = self.numel * self.dtype.itemsize
      if len(raw) < want:
        raise CheckpointFormatError(
            f'storage {self.name} holds {len(raw)} bytes where {self.numel} elements of '
            f'{self.dtype} need {want}: the file is truncated or damaged')
      self._array = np.frombuffer(raw[:want], dtype=self.dtype)
    return self._array


class _Tensor:
  """A tensor of the file: a strided view of a storage, read when the storages are."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def array(self):
    storage, size, offset = self.storage, self.size, self.offset
    base = storage.array()
    if 0 in size:
      return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, self.stride))
    if last >= base.size:
      raise CheckpointFormatError(
          f'a tensor of size {size} reads element {last} of storage {storage.name}, which has '
          f'{base.size}: the file is damaged')
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(base[offset:], size, [s * item for s in self.stride],
                                           writeable=False)
    return np.array(view, order='C')


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None,
                    metadata=None):
  """torch._utils._rebuild_tensor_v2: a strided view of `storage` (copied by `_force`)."""
  del requires_grad, metadata
  if hooks:
    raise UnsafeCheckpointError('a tensor carries backward hooks; a checkpoint of weights has none')
  if not isinstance(storage, _Storage):
    raise CheckpointFormatError(f'a tensor is built on {type(storage).__name__}, not a storage')
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  offset = int(offset)
  if len(size) != len(stride) or min(size + stride + (offset,)) < 0:
    raise CheckpointFormatError(f'a tensor of storage {storage.name} has size {size}, stride '
                                f'{stride} and offset {offset}')
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
  """torch._utils._rebuild_parameter: a Parameter is its data."""
  del requires_grad
  if hooks:
    raise UnsafeCheckpointError('a parameter carries backward hooks; a checkpoint of weights '
                                'has none')
  return data


def _ordered_dict(*args):
  return collections.OrderedDict(*args)


def _numpy_scalar(dtype, data=None):
  if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
    raise UnsafeCheckpointError(f'a numpy scalar of dtype {dtype!r} from {type(data).__name__}')
  return np.frombuffer(data, dtype)[0]


def _numpy_dtype(name, align=False, copy=True):
  del copy
  dtype = np.dtype(name, align=align)
  if dtype.hasobject:
    raise UnsafeCheckpointError(f'numpy dtype {name!r} holds Python objects')
  return dtype


def _latin1_encode(text, encoding='latin1'):
  """_codecs.encode, as numpy scalars pickled by protocol 2 use it (and only so)."""
  if not isinstance(text, str) or encoding != 'latin1':
    raise UnsafeCheckpointError(f'_codecs.encode called with {encoding!r}')
  return text.encode('latin1')


_ALLOWED = {
    ('collections', 'OrderedDict'): _ordered_dict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy', 'dtype'): _numpy_dtype,
    ('_codecs', 'encode'): _latin1_encode,
}


class _StorageType:
  """A torch storage class named by the pickle (used only as a persistent id's tag)."""

  def __init__(self, name):
    self.name, self.dtype = name, _STORAGE_DTYPES[name]


class _Unpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED` globals and torch's storage classes; storages via `storage_for`."""

  def __init__(self, file, storage_for, path):
    super().__init__(file)
    self._storage_for, self._path = storage_for, path

  def find_class(self, module, name):
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    raise UnsafeCheckpointError(
        f'{self._path} names the global {module}.{name}, which a checkpoint of weights does not '
        'need; it was not loaded (loading it would run code from the file). Save the weights '
        'with torch.save(model.state_dict(), path) and load that file instead')

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or pid[0] != 'storage':
      raise CheckpointFormatError(f'{self._path}: unknown persistent id {pid!r:.80}')
    kind, key, numel = pid[1], str(pid[2]), pid[4]
    if not isinstance(kind, _StorageType):
      raise CheckpointFormatError(f'{self._path}: storage {key} has type {kind!r:.80}')
    if kind.name == 'UntypedStorage':
      numel = int(numel)  # bytes
    return self._storage_for(key, kind.dtype, int(numel))


def _load_zip(path):
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkls = [n for n in names if n.endswith('/data.pkl') or n == 'data.pkl']
    if len(pkls) != 1:
      raise CheckpointFormatError(f'{path}: a torch zip checkpoint has one data.pkl; found '
                                  f'{len(pkls)}')
    prefix = pkls[0][:-len('data.pkl')]
    byteorder = z.read(prefix + 'byteorder').decode() if prefix + 'byteorder' in names else 'little'
    if byteorder != 'little':
      raise CheckpointFormatError(f'{path} was written on a {byteorder}-endian machine; only '
                                  'little-endian checkpoints are read')
    storages = {}

    def storage_for(key, dtype, numel):
      if key not in storages:
        entry = f'{prefix}data/{key}'
        if entry not in names:
          raise CheckpointFormatError(f'{path}: storage {key} ({entry}) is missing from the '
                                      'archive: the file is damaged')
        storages[key] = _Storage(lambda: z.read(entry), dtype, numel, key)
      return storages[key]

    with z.open(pkls[0]) as f:
      return _force(_Unpickler(f, storage_for, path).load())


def _load_legacy(path):
  """torch < 1.6's format: magic, protocol, sys_info, the object, storage keys, raw storages."""
  with open(path, 'rb') as f:
    def load(storage_for=None):
      return _Unpickler(f, storage_for or _no_storage, path).load()

    if load() != _LEGACY_MAGIC:
      raise CheckpointFormatError(f'{path} is neither a zip archive nor a legacy torch file')
    load()  # protocol version
    sys_info = load()
    if not sys_info.get('little_endian', True):
      raise CheckpointFormatError(f'{path} was written on a big-endian machine')
    pending = {}

    def storage_for(key, dtype, numel):
      if key not in pending:
        pending[key] = _Storage(lambda k=key: raw[k], dtype, numel, key)
      return pending[key]

    obj = load(storage_for)
    keys = load()
    raw = {}
    for key in keys:
      head = f.read(8)
      if len(head) != 8:
        raise CheckpointFormatError(f'{path}: storage {key} is missing: the file is truncated')
      numel, = struct.unpack('<q', head)
      if key not in pending:
        raise CheckpointFormatError(f'{path}: storage {key} is listed but never used')
      raw[key] = f.read(numel * pending[key].dtype.itemsize)
    return _force(obj)


def _no_storage(key, dtype, numel):
  del dtype, numel
  raise CheckpointFormatError(f'storage {key} referenced outside the object')


def _force(obj):
  """Copies out every array (the zip or file is still open here); `_metadata` is dropped."""
  if isinstance(obj, dict):
    return type(obj)((k, _force(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_force(v) for v in obj)
  if isinstance(obj, _Tensor):
    return obj.array()
  if isinstance(obj, _Storage):
    return np.array(obj.array())
  return obj


def load(path):
  """The object pickled in the torch file `path` (zip or legacy format), tensors as arrays.

  Raises CheckpointFormatError / UnsafeCheckpointError; a damaged pickle may also raise what
  `pickle` and `zipfile` raise (torch_files.load turns those into CheckpointFormatError).
  """
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  return _load_legacy(path)


# --- Writing: a state dict as torch.save writes it (zip format), readable by torch.load. -------

class _Global:
  """A name that the pickle refers to as a global (torch need not be importable here)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle requires reduce functions to be callable; never called
    raise NotImplementedError(f'{self.module}.{self.name}')


_TORCH_STORAGE = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items() if k != 'UntypedStorage'}


class _TensorOut:
  """An array to pickle as torch's `_rebuild_tensor_v2(storage, 0, shape, stride, False, {})`."""

  def __init__(self, array, key):
    self.array, self.key = array, key


class _StorageOut:

  def __init__(self, array, key):
    self.array, self.key = array, key


class _Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Protocol-2 pickler that writes `_Global`s by name and storages as persistent ids."""

  def save(self, obj, save_persistent_id=True):
    if not isinstance(obj, _Global):
      return super().save(obj, save_persistent_id)
    memo = self.memo.get(id(obj))
    if memo is not None:
      self.write(self.get(memo[0]))
      return None
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())
    self.memoize(obj)
    return None

  def persistent_id(self, obj):
    if isinstance(obj, _StorageOut):
      storage = _Global('torch', _TORCH_STORAGE[obj.array.dtype])
      return ('storage', storage, obj.key, 'cpu', obj.array.size)
    return None

  def reducer_override(self, obj):
    if isinstance(obj, _TensorOut):
      a = obj.array
      stride = tuple(s // a.itemsize for s in a.strides) if a.ndim else ()
      return (_Global('torch._utils', '_rebuild_tensor_v2'),
              (_StorageOut(a, obj.key), 0, a.shape, stride, False,
               collections.OrderedDict()))
    if isinstance(obj, collections.OrderedDict):
      return (_Global('collections', 'OrderedDict'), (), None, None, iter(obj.items()))
    return NotImplemented


def save_state_dict(path, weights):
  """Writes {name: array} as torch.save(state_dict) does; `torch.load(path)` reads it back.

  The file holds only tensors in an OrderedDict, so torch.load(path, weights_only=True) accepts it.
  """
  arrays = collections.OrderedDict()
  for i, (name, value) in enumerate(weights.items()):
    a = np.require(np.asarray(value), requirements='C')  # (ascontiguousarray makes 0-d 1-d)
    if a.dtype not in _TORCH_STORAGE:
      raise TypeError(f'{name}: dtype {a.dtype} has no torch storage; '
                      f'writable: {sorted(str(d) for d in _TORCH_STORAGE)}')
    arrays[name] = _TensorOut(a, str(i))
  buf = io.BytesIO()
  _Pickler(buf, protocol=2).dump(arrays)
  prefix = os.path.splitext(os.path.basename(path))[0] or 'archive'
  tmp = path + '.tmp'
  with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_STORED) as z:
    z.writestr(f'{prefix}/data.pkl', buf.getvalue())
    z.writestr(f'{prefix}/byteorder', 'little')
    for t in arrays.values():
      z.writestr(f'{prefix}/data/{t.key}', t.array.tobytes())
    z.writestr(f'{prefix}/version', '3\n')
  os.replace(tmp, path)
