"""robust_jax.interop.torch_files reads torch's files without torch and never runs their code.

The fixtures were written by torch itself (scripts/make_torch_fixtures.py, reference venv), with the
values torch gives for them, so these tests need no torch.
"""

import json
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest

from robust_jax.interop import torch_files

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'torch')


def _expected(name='expected.npz'):
  with np.load(os.path.join(FIXTURES, name)) as f:
    return {k: f[k] for k in f.files}


@pytest.mark.parametrize('name', ['tensors.pt', 'tensors_legacy.pt'])
def test_every_dtype_and_view_matches_torch(name):
  got = torch_files.load(os.path.join(FIXTURES, name))
  want = _expected()
  assert sorted(got) == sorted(want)
  for k, v in want.items():
    g = got[k]
    if k == 'bf16':
      assert g.dtype == ml_dtypes.bfloat16
      g = g.astype(np.float32)
    else:
      assert g.dtype == v.dtype, k
    assert g.shape == v.shape, k
    np.testing.assert_array_equal(g, v, err_msg=k)
    assert g.flags.c_contiguous and g.flags.owndata, k


def test_views_of_one_storage_are_independent_copies():
  got = torch_files.load(os.path.join(FIXTURES, 'tensors.pt'))
  got['base'][0, 0] = 1e9
  assert got['transposed'][0, 0] != 1e9


def test_a_training_checkpoint_gives_its_state_dict_without_the_dataparallel_prefix():
  weights = torch_files.load_state_dict(os.path.join(FIXTURES, 'training_checkpoint.pt'))
  want = _expected('training_checkpoint_expected.npz')
  assert sorted(weights) == sorted(want)
  for k, v in want.items():
    np.testing.assert_array_equal(weights[k], v, err_msg=k)
  tree = torch_files.load(os.path.join(FIXTURES, 'training_checkpoint.pt'))
  assert tree['epoch'] == 3 and tree['best_acc'] == 0.5 and tree['optimizer'] == {'lr': 0.1}


def _torch_like_zip(path, payload, storages=()):
  """A zip laid out as torch's, whose data.pkl is `payload` (bytes)."""
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', payload)
    z.writestr('archive/byteorder', 'little')
    z.writestr('archive/version', '3\n')
    for key, raw in storages:
      z.writestr(f'archive/data/{key}', raw)


class _RunsCode:
  """Unpickling this calls exec: what a malicious checkpoint does."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return exec, (f'open({self.marker!r}, "w").write("ran")',)


@pytest.mark.parametrize('legacy', [False, True])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, legacy):
  marker = str(tmp_path / 'ran.txt')
  payload = pickle.dumps({'weights': _RunsCode(marker)}, protocol=2)
  # The payload does run code under a general unpickler (the attack is real):
  pickle.loads(payload)
  assert os.path.exists(marker)
  os.remove(marker)
  path = str(tmp_path / 'evil.pt')
  if legacy:
    with open(path, 'wb') as f:
      for obj in (0x1950a86a20f9469cfc6c, 1001, {'little_endian': True}):
        pickle.dump(obj, f, protocol=2)
      f.write(payload)
  else:
    _torch_like_zip(path, payload)
  with pytest.raises(torch_files.UnsafeCheckpointError, match=r'__builtin__\.exec'):
    torch_files.load(path)
  assert not os.path.exists(marker)


@pytest.mark.parametrize('module,name', [('os', 'system'), ('torch', 'load'),
                                         ('numpy', 'load'), ('collections', 'defaultdict')])
def test_any_global_outside_the_allowed_set_is_named(tmp_path, module, name):
  payload = b'\x80\x02c' + f'{module}\n{name}\n'.encode() + b')R.'
  path = str(tmp_path / 'x.pt')
  _torch_like_zip(path, payload)
  with pytest.raises(torch_files.UnsafeCheckpointError, match=rf'{module}\.{name}'):
    torch_files.load(path)


def test_damaged_files_are_clear_errors(tmp_path):
  good = os.path.join(FIXTURES, 'tensors.pt')
  with zipfile.ZipFile(good) as z:
    entries = {n: z.read(n) for n in z.namelist()}
  # A storage file missing from the archive.
  missing = str(tmp_path / 'missing.pt')
  with zipfile.ZipFile(missing, 'w') as z:
    for n, raw in entries.items():
      if not n.endswith('/data/0'):
        z.writestr(n, raw)
  with pytest.raises(torch_files.CheckpointFormatError, match='storage 0 .*missing'):
    torch_files.load(missing)
  # A storage cut short.
  short = str(tmp_path / 'short.pt')
  with zipfile.ZipFile(short, 'w') as z:
    for n, raw in entries.items():
      z.writestr(n, raw[:len(raw) // 2] if n.endswith('/data/0') else raw)
  with pytest.raises(torch_files.CheckpointFormatError, match='truncated or damaged'):
    torch_files.load(short)
  # Not a checkpoint at all, and a legacy file cut in the middle.
  junk = tmp_path / 'junk.pt'
  junk.write_bytes(b'not a checkpoint')
  with pytest.raises(torch_files.CheckpointFormatError, match='junk.pt'):
    torch_files.load(str(junk))
  legacy = open(os.path.join(FIXTURES, 'tensors_legacy.pt'), 'rb').read()
  cut = tmp_path / 'cut.pt'
  cut.write_bytes(legacy[:len(legacy) - 20])
  with pytest.raises(torch_files.CheckpointFormatError):
    torch_files.load(str(cut))
  with pytest.raises(FileNotFoundError, match='nowhere.pt'):
    torch_files.load(str(tmp_path / 'nowhere.pt'))


def test_a_tensor_reading_past_its_storage_is_refused(tmp_path):
  # 4 floats of storage, a tensor claiming 3x3 of them.
  payload = (b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\n('
             b'(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu'
             b'K\x04tQK\x00K\x03K\x03\x86K\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtR.')
  path = str(tmp_path / 'overrun.pt')
  _torch_like_zip(path, payload, [('0', np.arange(4, dtype=np.float32).tobytes())])
  with pytest.raises(torch_files.CheckpointFormatError, match='reads element 8 of storage 0'):
    torch_files.load(path)


def _safetensors(path, arrays):
  header, chunks, offset = {}, [], 0
  for name, a in arrays.items():
    raw = a.tobytes()
    dtype = {np.dtype(np.float32): 'F32', np.dtype(np.int64): 'I64',
             np.dtype(ml_dtypes.bfloat16): 'BF16'}[a.dtype]
    header[name] = {'dtype': dtype, 'shape': list(a.shape),
                    'data_offsets': [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  header['__metadata__'] = {'format': 'pt'}
  head = json.dumps(header).encode()
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(head)) + head + b''.join(chunks))


def test_safetensors(tmp_path):
  arrays = {'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'n': np.array(5),
            'b': np.ones(2, ml_dtypes.bfloat16)}
  path = str(tmp_path / 'm.safetensors')
  _safetensors(path, arrays)
  got = torch_files.load_state_dict(path)
  assert sorted(got) == sorted(arrays)
  for k, v in arrays.items():
    assert got[k].dtype == v.dtype
    np.testing.assert_array_equal(got[k], v)
  raw = open(path, 'rb').read()
  (tmp_path / 'cut.safetensors').write_bytes(raw[:-4])
  with pytest.raises(torch_files.CheckpointFormatError, match='tensor .* damaged'):
    torch_files.load(str(tmp_path / 'cut.safetensors'))


def test_state_dict_errors_name_what_the_file_holds():
  with pytest.raises(torch_files.CheckpointFormatError, match='holds no state dict.*list'):
    torch_files.state_dict([1, 2])
  with pytest.raises(torch_files.CheckpointFormatError, match='none of the keys'):
    torch_files.state_dict({'epoch': 3})
  assert list(torch_files.state_dict({'model': {'a.w': np.ones(1)}})) == ['a.w']
  # Only a prefix that every name has is removed.
  assert sorted(torch_files.state_dict({'module.a': np.ones(1), 'b': np.ones(1)})) == [
      'b', 'module.a']


def test_save_state_dict_round_trips_every_dtype(tmp_path):
  want = _expected()
  arrays = {k: v for k, v in want.items() if k != 'bf16'}
  arrays['bf16'] = want['bf16'].astype(ml_dtypes.bfloat16)
  arrays['fortran'] = np.asfortranarray(want['base'])
  path = str(tmp_path / 'out.pt')
  torch_files.save_state_dict(path, arrays)
  got = torch_files.load(path)
  assert list(got) == list(arrays)
  for k, v in arrays.items():
    assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  with pytest.raises(TypeError, match='complex64 has no torch storage'):
    torch_files.save_state_dict(path, {'c': np.zeros(2, np.complex64)})
  assert torch_files.load(path).keys() == arrays.keys()  # the failed save left the file intact
