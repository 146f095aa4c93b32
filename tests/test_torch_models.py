"""PyTorch state dicts of the RobustBench CIFAR architectures compute the same logits in JAX.

Fixtures: tiny random instances (random weights and BatchNorm statistics) saved by torch with the
logits torch computes for them (scripts/make_torch_fixtures.py); no torch is needed here.
"""

import os

import ml_collections
import numpy as np
import pytest

from robust_jax.interop import torch_files
from robust_jax.interop import torch_models

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'torch')
CASES = {
    'preact_resnet18_w4': dict(name='preact_resnet18', base_width=4),
    'preact_resnet18_w4_normalized': dict(name='preact_resnet18', base_width=4),
    'wide_resnet_10_1': dict(name='wide_resnet', depth=10, width=1),
}


def _fixture(name):
  with np.load(os.path.join(FIXTURES, f'{name}_logits.npz')) as f:
    return {k: f[k] for k in f.files}


@pytest.mark.parametrize('name', sorted(CASES))
def test_logits_match_pytorch(name):
  f = _fixture(name)
  norm = dict(mean=tuple(f['mean']), std=tuple(f['std'])) if 'mean' in f else {}
  logits_fn = torch_models.torch_logits_fn(os.path.join(FIXTURES, f'{name}.pt'),
                                           ml_collections.ConfigDict(CASES[name]), **norm)
  got = np.asarray(logits_fn(f['x']))
  np.testing.assert_allclose(got, f['logits'], rtol=1e-4, atol=1e-5 * np.abs(f['logits']).max())
  assert (got.argmax(1) == f['logits'].argmax(1)).all()


def test_no_normalisation_is_added_that_the_module_does_not_have():
  f = _fixture('preact_resnet18_w4_normalized')
  logits_fn = torch_models.torch_logits_fn(
      os.path.join(FIXTURES, 'preact_resnet18_w4_normalized.pt'),
      ml_collections.ConfigDict(CASES['preact_resnet18_w4_normalized']))
  assert np.abs(np.asarray(logits_fn(f['x'])) - f['logits']).max() > 1e-2


def _weights(name):
  return torch_files.load_state_dict(os.path.join(FIXTURES, f'{name}.pt'))


def test_trades_unused_sub_block_is_skipped_and_every_other_key_used():
  weights = _weights('wide_resnet_10_1')
  assert any(k.startswith('sub_block1.') for k in weights)
  torch_models.convert(weights, ml_collections.ConfigDict(CASES['wide_resnet_10_1']))
  weights['extra.weight'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match=r'1 unexpected: extra\.weight'):
    torch_models.convert(weights, ml_collections.ConfigDict(CASES['wide_resnet_10_1']))


def test_a_checkpoint_that_does_not_fit_lists_missing_unexpected_and_misshaped_keys():
  weights = _weights('wide_resnet_10_1')
  deeper = ml_collections.ConfigDict(dict(name='wide_resnet', depth=16, width=1))
  with pytest.raises(ValueError, match=r'depth=16 width=1 with 10 classes:\n  30 missing: '
                                       r'block1\.layer\.1\.bn1\.bias'):
    torch_models.convert(weights, deeper, source='wrn.pt')
  wider = ml_collections.ConfigDict(dict(name='preact_resnet18', base_width=8))
  with pytest.raises(ValueError, match=r'mis-shaped: conv1\.weight: \(4, 3, 3, 3\) in the file, '
                                       r'the model needs \(8, 3, 3, 3\)'):
    torch_models.convert(_weights('preact_resnet18_w4'), wider)
  with pytest.raises(ValueError, match=r'mis-shaped: linear\.weight: \(10, 32\).*\(100, 32\)'):
    torch_models.convert(_weights('preact_resnet18_w4'),
                         ml_collections.ConfigDict(CASES['preact_resnet18_w4']), num_classes=100)
  weights = _weights('preact_resnet18_w4')
  del weights['bn.running_var']
  with pytest.raises(ValueError, match=r'1 missing: bn\.running_var'):
    torch_models.convert(weights, ml_collections.ConfigDict(CASES['preact_resnet18_w4']))
  with pytest.raises(ValueError, match="model.name='small_cnn' has no PyTorch layout"):
    torch_models.convert(weights, ml_collections.ConfigDict(dict(name='small_cnn')))
