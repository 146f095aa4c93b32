"""Reads PyTorch checkpoints (`.pt`, `.pth`, `.bin`) and `.safetensors` files without torch.

    tree = torch_files.load('model.pt')                # nested dicts/lists of np.ndarray
    weights = torch_files.load_state_dict('model.pt')  # {'conv1.weight': np.ndarray, ...}
    torch_files.save_state_dict('out.pt', weights)     # torch.load(path) reads it back

The checkpoint API: which format a file is in (by its suffix, or a zip archive), `.safetensors`
(a JSON header and raw tensors), and the flat state dict inside whatever a training script saved.
torch's own `.pt` pickle format is read and written by torch_pickle, whose restricted unpickler
never runs code from the file (any global a checkpoint of weights does not need is an
`UnsafeCheckpointError` that names it).
"""

import collections
import hashlib
import json
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from robust_jax.interop import torch_pickle
# The errors and the writer live in torch_pickle; callers import them from here.
from robust_jax.interop.torch_pickle import CheckpointFormatError
from robust_jax.interop.torch_pickle import UnsafeCheckpointError  # noqa: F401
from robust_jax.interop.torch_pickle import save_state_dict  # noqa: F401

_SAFETENSORS_DTYPES = {
    'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
    'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8,
    'BOOL': np.bool_,
}
# Where a training script may have put the weights inside a checkpoint dict.
STATE_DICT_KEYS = ('state_dict', 'model_state_dict', 'model', 'net', 'module')


def _load_safetensors(path):
  with open(path, 'rb') as f:
    head = f.read(8)
    if len(head) != 8:
      raise CheckpointFormatError(f'{path}: too short for a safetensors file')
    n, = struct.unpack('<Q', head)
    if n > os.path.getsize(path) - 8:
      raise CheckpointFormatError(f'{path}: header of {n} bytes exceeds the file')
    header = json.loads(f.read(n))
    data = f.read()
  out = collections.OrderedDict()
  for name, info in header.items():
    if name == '__metadata__':
      continue
    dtype = _SAFETENSORS_DTYPES.get(info.get('dtype'))
    if dtype is None:
      raise CheckpointFormatError(f'{path}: tensor {name} has dtype {info.get("dtype")!r}; '
                                  f'readable: {sorted(_SAFETENSORS_DTYPES)}')
    start, end = info['data_offsets']
    shape = tuple(info['shape'])
    if end > len(data) or end - start != int(np.prod(shape)) * np.dtype(dtype).itemsize:
      raise CheckpointFormatError(f'{path}: tensor {name} has offsets {start}..{end} for shape '
                                  f'{shape} of {np.dtype(dtype)}: the file is damaged')
    out[name] = np.frombuffer(data[start:end], dtype).reshape(shape).copy()
  return out


WEIGHTS_SUFFIXES = ('.pt', '.pth', '.bin', '.safetensors')


def is_weights_file(path):
  """Whether `path` names a PyTorch or safetensors file (by its suffix), rather than a folder."""
  return str(path).endswith(WEIGHTS_SUFFIXES) and not os.path.isdir(path)


def sha256(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def load(path):
  """The object saved in `path` (.pt/.pth/.bin or .safetensors), tensors as numpy arrays."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'checkpoint {path} does not exist')
  try:
    if path.endswith('.safetensors'):
      return _load_safetensors(path)
    return torch_pickle.load(path)
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, IndexError,
          struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointFormatError(f'{path} is not a readable PyTorch or safetensors checkpoint '
                                f'({type(e).__name__}: {e})') from e


def state_dict(obj, path='the checkpoint'):
  """The flat {name: array} of weights inside a loaded checkpoint.

  Accepts a state dict itself or a dict that holds one under a key of `STATE_DICT_KEYS`, and
  removes the 'module.' prefix that torch.nn.DataParallel adds to every name.
  """
  if isinstance(obj, dict):
    for key in STATE_DICT_KEYS:
      if isinstance(obj.get(key), dict):
        return state_dict(obj[key], path)
  if not isinstance(obj, dict) or not obj:
    raise CheckpointFormatError(f'{path} holds no state dict (a dict of tensors); it holds '
                                f'{type(obj).__name__}')
  weights = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
  if not weights:
    raise CheckpointFormatError(f'{path}: none of the keys {sorted(obj)[:8]} is a tensor or one of '
                                f'{STATE_DICT_KEYS}')
  if all(k.startswith('module.') for k in weights):
    weights = {k[len('module.'):]: v for k, v in weights.items()}
  return weights


def load_state_dict(path):
  """{parameter or buffer name: np.ndarray} of the checkpoint in `path`."""
  return state_dict(load(path), path)
