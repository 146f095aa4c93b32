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
from tests import helpers
from tests import test_launch

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'torch')
CASES = {
    'preact_resnet18_w4': dict(name='preact_resnet18', base_width=4),
    'preact_resnet18_w4_normalized': dict(name='preact_resnet18', base_width=4),
    'wide_resnet_10_1': dict(name='wide_resnet', depth=10, width=1),
    'dm_wide_resnet_10_2_swish': dict(name='dm_wide_resnet', depth=10, width=2,
                                      activation='swish'),
    'dm_wide_resnet_16_1_relu': dict(name='dm_wide_resnet', depth=16, width=1, activation='relu'),
}


def _fixture(name):
  with np.load(os.path.join(FIXTURES, f'{name}_logits.npz')) as f:
    return {k: f[k] for k in f.files}


@pytest.mark.parametrize('name', [n for n in sorted(CASES) if 'dm_' in n or 'normalized' in n])
def test_normalisation_constants_from_the_model_config(name):
  """DeepMind's constants (std 0.2471, not the dataset's 0.2470) given as config.model.mean/std
  give the module's logits, closer than the dataset's constants do."""
  f = _fixture(name)
  path = os.path.join(FIXTURES, f'{name}.pt')
  cfg = ml_collections.ConfigDict({**CASES[name], 'mean': tuple(map(float, f['mean'])),
                                   'std': tuple(map(float, f['std']))})
  got = np.asarray(torch_models.torch_logits_fn(path, cfg, mean=(0.0,), std=(1.0,))(f['x']))
  np.testing.assert_allclose(got, f['logits'], rtol=1e-4, atol=1e-5 * np.abs(f['logits']).max())
  dataset_std = ml_collections.ConfigDict({**CASES[name], 'mean': cfg.mean,
                                           'std': (0.2470, 0.2435, 0.2616)})
  other = np.asarray(torch_models.torch_logits_fn(path, dataset_std)(f['x']))
  # The 0.0001 difference in std moves the logits by ~1e-5 of their scale (inside the 1e-4
  # contract, so compare the two errors): the module's own constants are 10x closer at least.
  assert np.abs(got - f['logits']).max() * 10 < np.abs(other - f['logits']).max()


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


def test_export_then_import_gives_the_same_weights_and_logits(tmp_path):
  weights = _weights('preact_resnet18_w4')
  cfg = ml_collections.ConfigDict(CASES['preact_resnet18_w4'])
  model, variables = torch_models.convert(weights, cfg)
  path = str(tmp_path / 'exported.pt')
  torch_models.save_torch(path, cfg, variables)
  back = torch_files.load_state_dict(path)
  assert sorted(back) == sorted(weights)
  for k, v in weights.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_a_model_trained_here_round_trips_through_a_pytorch_file(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from robust_jax import models  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(name='wide_resnet', depth=10, width=1))
  model = models.build(cfg, num_classes=10, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
  x = _fixture('wide_resnet_10_1')['x']
  variables = model.init(jax.random.key(3), x, train=False)
  # Non-trivial BatchNorm statistics, as after training.
  variables = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 0.1 * np.cos(np.arange(v.size).reshape(v.shape))
      if p[0].key == 'batch_stats' else v, variables)
  path = str(tmp_path / 'wrn.pt')
  torch_models.save_torch(path, cfg, variables, trades_sub_block=True)
  assert any(k.startswith('sub_block1.') for k in torch_files.load_state_dict(path))
  logits_fn = torch_models.torch_logits_fn(path, cfg, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
  np.testing.assert_allclose(np.asarray(logits_fn(x)),
                             np.asarray(model.apply(variables, x, train=False)), rtol=1e-5,
                             atol=1e-6)


def _globals(pkl):
  import pickletools  # pylint: disable=g-import-not-at-top
  return {arg for op, arg, _ in pickletools.genops(pkl) if op.name == 'GLOBAL'}


def test_the_exported_file_is_laid_out_as_torch_writes_it(tmp_path):
  import zipfile  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(CASES['preact_resnet18_w4'])
  _, variables = torch_models.convert(_weights('preact_resnet18_w4'), cfg)
  path = str(tmp_path / 'exported.pt')
  torch_models.save_torch(path, cfg, variables)
  with zipfile.ZipFile(os.path.join(FIXTURES, 'preact_resnet18_w4.pt')) as z:
    theirs = _globals(z.read('preact_resnet18_w4/data.pkl'))
    their_files = {n.split('/', 1)[1] for n in z.namelist() if not n.split('/', 1)[1]
                   .startswith('.')}
  with zipfile.ZipFile(path) as z:
    ours = _globals(z.read('exported/data.pkl'))
    our_files = {n.split('/', 1)[1] for n in z.namelist()}
    assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
  assert ours == theirs, (ours, theirs)
  assert our_files == their_files


def test_torch_loads_the_exported_file_strictly_and_computes_the_same_logits(tmp_path):
  torch = pytest.importorskip('torch')  # the reference venv (requirements-ref.txt)
  from benchmarks import torch_layouts  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(CASES['wide_resnet_10_1'])
  model, variables = torch_models.convert(_weights('wide_resnet_10_1'), cfg)
  path = str(tmp_path / 'exported.pt')
  torch_models.save_torch(path, cfg, variables, trades_sub_block=True)
  module = torch_layouts.WideResNet(10, 1)
  module.load_state_dict(torch.load(path, weights_only=True), strict=True)
  x = _fixture('wide_resnet_10_1')['x']
  with torch.no_grad():
    theirs = module.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(np.asarray(model.apply(variables, x, train=False)), theirs,
                             rtol=1e-4, atol=1e-6)
  # Without TRADES' sub_block1 (save_torch's default), torch_layouts.load builds the module without
  # it, still strictly.
  torch_models.save_torch(path, cfg, variables)
  module = torch_layouts.load(path, cfg)
  assert not hasattr(module, 'sub_block1')
  with torch.no_grad():
    plain = module(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_array_equal(plain, theirs)


@pytest.mark.parametrize('name', sorted(CASES))
def test_torch_layouts_load_each_fixture_strictly_and_give_its_logits(name):
  torch = pytest.importorskip('torch')  # the reference venv (requirements-ref.txt)
  from benchmarks import torch_layouts  # pylint: disable=g-import-not-at-top
  f = _fixture(name)
  norm = dict(mean=f['mean'], std=f['std']) if 'mean' in f else {}
  module = torch_layouts.load(os.path.join(FIXTURES, f'{name}.pt'),
                              ml_collections.ConfigDict(CASES[name]), **norm)
  with torch.no_grad():
    got = module(torch.from_numpy(np.ascontiguousarray(f['x'].transpose(0, 3, 1, 2)))).numpy()
  np.testing.assert_allclose(got, f['logits'], rtol=1e-5, atol=1e-6)


def _launch_eval(tmp_path, tfds_dir, checkpoint, *flags):
  return test_launch.launch(
      '--mode=eval', f'--workdir={tmp_path / "ev"}', f'--checkpoint={checkpoint}',
      '--config.model.name=wide_resnet', '--config.model.depth=10', '--config.model.width=1',
      '--config.defense.name=standard', '--config.model.normalize=false',
      '--config.eval.num_examples=64', '--config.eval.batch_size=32',
      '--config.eval.attacks.pgd20.steps=2', '--config.eval.attacks.pgd40x2.steps=2',
      '--config.eval.sanity_checks=false', '--progress=false', *flags, data_dir=tfds_dir)


@test_launch.needs_fashion_mnist
def test_launch_evaluates_a_pytorch_file_like_its_own_checkpoints(tmp_path, tfds_dir):
  import json  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections as mc  # pylint: disable=g-import-not-at-top
  from robust_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from robust_jax import models  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(name='wide_resnet', depth=10, width=1))
  model = models.build(cfg, num_classes=10, mean=(0.0,), std=(1.0,))
  data = data_lib.load(mc.ConfigDict(dict(name='fashion_mnist', data_dir=str(tfds_dir),
                                          source_dir='')))
  x = data.test_images[:64].astype(np.float32) / 255
  variables = model.init(jax.random.key(0), x, train=False)
  variables = jax.tree_util.tree_map_with_path(   # BatchNorm statistics that matter
      lambda p, v: v + 0.3 * np.sin(np.arange(v.size).reshape(v.shape))
      if p[0].key == 'batch_stats' else v, variables)
  path = tmp_path / 'wrn.pt'
  torch_models.save_torch(str(path), cfg, variables)
  r = _launch_eval(tmp_path, tfds_dir, path)
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.loads((tmp_path / 'ev' / 'results.json').read_text())
  want = (np.asarray(model.apply(variables, x, train=False)).argmax(1) == data.test_labels[:64])
  assert results['clean_accuracy'] == want.mean()
  assert results['checkpoint_format'] == 'pytorch' and len(results['checkpoint_sha256']) == 64
  assert 'worst_case_accuracy' in results and (tmp_path / 'ev' / 'report.md').exists()

  # A file of another architecture: one clear line naming the keys, nothing written.
  r = _launch_eval(tmp_path / 'other', tfds_dir, path, '--config.model.depth=16')
  assert r.returncode == 2
  assert 'robust_jax: error:' in r.stderr and 'missing: block1.layer.1.' in r.stderr
  assert not (tmp_path / 'other').exists()



def _trained_workdir(workdir):
  """A workdir as training leaves it (config.json, a checkpoint of step 7) of a WRN-10-1 with EMA
  weights and BatchNorm statistics that differ from its raw weights; returns (config, model,
  the EMA variables, the raw variables)."""
  import jax  # pylint: disable=g-import-not-at-top
  from robust_jax import models  # pylint: disable=g-import-not-at-top
  from robust_jax import report  # pylint: disable=g-import-not-at-top
  from robust_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  from robust_jax.training import optim  # pylint: disable=g-import-not-at-top
  from robust_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  config = helpers.quick_config(**{'model.name': 'wide_resnet', 'model.depth': 10,
                                   'model.width': 1, 'defense.name': 'standard',
                                   'optim.ema_decay': 0.5})
  model = models.build(config.model, num_classes=10, mean=(0.2860,), std=(0.3530,))
  tx, _ = optim.make_optimizer(config.optim, 10, 10)
  state = state_lib.init_state(model, tx, jax.random.key(0), (28, 28, 1), 0.5)

  def moved(tree, scale):
    return jax.tree.map(lambda v: v + scale * np.cos(np.arange(v.size).reshape(v.shape)), tree)

  state = state.replace(step=state.step + 7, ema_params=moved(state.params, 0.05),
                        batch_stats=moved(state.batch_stats, 0.2))
  workdir.mkdir()
  report.write_json(str(workdir / 'config.json'), config.to_dict())
  ckpt = checkpoint.Checkpointer(str(workdir))
  ckpt.save(7, **state_lib.to_items(state))
  ckpt.close()
  return (config, model, {'params': state.ema_params, 'batch_stats': state.batch_stats},
          {'params': state.params, 'batch_stats': state.batch_stats})


@test_launch.needs_fashion_mnist
def test_launch_exports_the_weights_eval_scores_as_a_pytorch_file(tmp_path, tfds_dir):
  """--mode=export of a run with EMA writes the EMA weights (those --mode=eval scores); read
  back without torch they give the run's own logits."""
  from robust_jax import experiment  # pylint: disable=g-import-not-at-top
  wd, path = tmp_path / 'wd', tmp_path / 'out' / 'wrn.pt'
  config, model, ema, raw = _trained_workdir(wd)
  r = test_launch.launch('--mode=export', f'--checkpoint={wd}', f'--export_path={path}',
                         '--config.model.name=wide_resnet', '--config.model.depth=10',
                         '--config.model.width=1', '--config.defense.name=standard',
                         '--config.optim.ema_decay=0.5', data_dir=tfds_dir)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'Exported the EMA weights of {wd} (step 7) to {path}' in r.stdout
  assert 'architecture: name=wide_resnet, depth=10, width=1, num_classes=10' in r.stdout
  assert f'sha256: {torch_files.sha256(path)}' in r.stdout
  x = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
  got = np.asarray(torch_models.torch_logits_fn(path, config.model, mean=(0.2860,),
                                                std=(0.3530,), image_shape=(28, 28, 1))(x))
  want = np.asarray(model.apply(ema, x, train=False))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  assert np.abs(np.asarray(model.apply(raw, x, train=False)) - want).max() > 1e-2

  # A model without a PyTorch layout: the error names the field and the exportable names.
  small = config.copy_and_resolve_references()
  small.model.name = 'small_cnn'
  with pytest.raises(ValueError, match=r"model.name='small_cnn' has no PyTorch layout here; "
                                       r"exportable: \['dm_wide_resnet', 'preact_resnet18', "
                                       r"'wide_resnet'\]"):
    experiment.export_checkpoint(small, str(wd), str(tmp_path / 'cnn.pt'))
  assert not (tmp_path / 'cnn.pt').exists()
  with pytest.raises(ValueError, match=r"--export_path='wrn.npz': name the PyTorch file to "
                                       r'write, ending in \.pt or \.pth'):
    experiment.export_checkpoint(config, str(wd), 'wrn.npz')
  jpeg = config.copy_and_resolve_references()
  jpeg.defense.name = 'jpeg'
  with pytest.raises(ValueError, match=r"defense.name='jpeg' deploys more than the network "
                                       r'\(transform\); a PyTorch file would hold the network '
                                       'alone'):
    experiment.export_checkpoint(jpeg, str(wd), str(tmp_path / 'jpeg.pt'))
