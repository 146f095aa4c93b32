"""Additional training data (robust_jax/data/extra.py, batching.py) and label smoothing.

Every batch holds exactly round(B * (1 - fraction)) real rows and the rest extra rows, spread
evenly; the extra stream's order is its own, deterministic per seed; training with extra data
resumes bit for bit; hosts read disjoint rows, only their own; npz (memory-mapped or not),
folders of shards and array_record read the same examples; bad files and values are clear
errors. Label smoothing smooths the cross-entropy targets only, and 0 is the old loss bit for bit.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from robust_jax import defenses
from robust_jax import errors
from robust_jax import models
from robust_jax import parallel
from robust_jax.training import loop as train_loop
from robust_jax import validation
from robust_jax.attacks import objectives
from robust_jax.data import batching
from robust_jax.data import extra as extra_lib
from robust_jax.defenses import trades
from tests import helpers

SHAPE = (28, 28, 1)


def _extra_arrays(n=40, shape=SHAPE, seed=1):
  """Extra images whose first pixel holds their index (mod 256) and labels index % 10."""
  images = np.random.default_rng(seed).integers(0, 256, (n,) + shape).astype(np.uint8)
  images.reshape(n, -1)[:, 0] = np.arange(n) % 256
  return images, (np.arange(n) % 10).astype(np.int64)


def _npz(path, n=40, compressed=False, **arrays):
  images, labels = _extra_arrays(n)
  arrays = {'image': images, 'label': labels, **arrays}
  (np.savez_compressed if compressed else np.savez)(path, **arrays)
  return str(path)


def _cfg(path='', fraction=0.7, synthetic=0):
  return ml_collections.ConfigDict(dict(path=path, fraction=fraction, synthetic=synthetic))


def _with_extra(dataset, path, fraction=0.7):
  return dataclasses.replace(
      dataset, extra=extra_lib.ExtraSet(path, fraction, dataset.train_images.shape[1:], 10))


@pytest.mark.parametrize('batch,fraction', [(128, 0.7), (1024, 0.7), (512, 0.7), (10, 0.3),
                                            (7, 0.5)])
def test_every_batch_holds_the_configured_mix_exactly_and_evenly(batch, fraction):
  n_real, n_extra = batching.split_batch(batch, fraction)
  assert n_real == int(np.floor(batch * (1 - fraction) + 0.5)) and n_real + n_extra == batch
  for step in range(3):
    is_extra, idx = batching.mixed_indices(0, step, batch, fraction, 100_000, 50_000)
    assert is_extra.sum() == n_extra
    assert len(set(idx[~is_extra])) == n_real and len(set(idx[is_extra])) == n_extra
  # Any run of rows (one host's, one device's) holds its proportional share, to a row.
  for parts in (2, 4):
    if batch % parts == 0:
      for share in np.split(batching.extra_mask(batch, n_extra), parts):
        assert abs(share.sum() - n_extra / parts) < 1


def test_extra_order_is_its_own_deterministic_per_seed_and_covers_the_set():
  a = [batching.extra_indices(0, s, 10, 50) for s in range(5)]  # one pass over 50 examples
  b = [batching.extra_indices(0, s, 10, 50) for s in range(5)]
  np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
  assert sorted(np.concatenate(a)) == list(range(50))
  other_seed = np.concatenate([batching.extra_indices(1, s, 10, 50) for s in range(5)])
  assert not np.array_equal(np.concatenate(a), other_seed)
  # Not the real stream's order over a set of the same size, and a new pass is reshuffled.
  assert not np.array_equal(a[0], batching.train_indices(0, 0, 10, 50))
  assert not np.array_equal(batching.extra_indices(0, 5, 10, 50), a[0])
  # Without extra data the real order is the one every earlier result used.
  np.testing.assert_array_equal(batching.train_indices(3, 7, 4, 20),
                                np.random.default_rng([3, 1]).permutation(20)[8:12])


def test_host_batch_reads_real_and_extra_rows_where_the_plan_says(tmp_path):
  dataset = _with_extra(helpers.tiny_dataset(n_train=64), _npz(tmp_path / 'x.npz'))
  for step in (0, 1, 9):  # step 9: the extra set (40 // 11 = 3 steps a pass) is on pass 3
    batch = batching.host_batch(dataset, 0, step, 16, slice(0, 16), 64)
    is_extra, idx = batching.mixed_indices(0, step, 16, 0.7, 64, 40)
    images, labels = dataset.extra.read(idx[is_extra])
    np.testing.assert_array_equal(batch['image'][is_extra], images)
    np.testing.assert_array_equal(batch['label'][is_extra], idx[is_extra] % 10)
    np.testing.assert_array_equal(batch['image'][~is_extra],
                                  dataset.train_images[idx[~is_extra]])
    np.testing.assert_array_equal(batch['label'][~is_extra],
                                  dataset.train_labels[idx[~is_extra]])
    assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
  # Without extra data: the old batch.
  plain = helpers.tiny_dataset(n_train=64)
  batch = batching.host_batch(plain, 0, 3, 16, slice(0, 16), 60)
  idx = batching.train_indices(0, 3, 16, 60)
  np.testing.assert_array_equal(batch['image'], plain.train_images[idx])


def test_two_hosts_read_disjoint_shares_that_make_the_global_batch(tmp_path):
  path = _npz(tmp_path / 'x.npz')
  base = helpers.tiny_dataset(n_train=64)
  whole = batching.host_batch(_with_extra(base, path), 0, 2, 16, slice(0, 16), 64)
  hosts = [_with_extra(base, path) for _ in range(2)]
  parts = [batching.host_batch(d, 0, 2, 16, batching.host_slice(16, i, 2), 64)
           for i, d in enumerate(hosts)]
  for key in ('image', 'label'):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  is_extra, idx = batching.mixed_indices(0, 2, 16, 0.7, 64, 40)
  mine = [set(idx[batching.host_slice(16, i, 2)][is_extra[batching.host_slice(16, i, 2)]])
          for i in range(2)]
  assert not mine[0] & mine[1]
  assert [d.extra.reads for d in hosts] == [len(m) for m in mine] and sum(map(len, mine)) == 11


def test_formats_read_the_same_examples(tmp_path):
  images, labels = _extra_arrays(40)
  stored = extra_lib.ExtraSet(_npz(tmp_path / 'a.npz'), 0.7, SHAPE, 10)
  assert isinstance(stored._shards[0][0], np.memmap)  # streamed, not loaded
  compressed = extra_lib.ExtraSet(_npz(tmp_path / 'b.npz', compressed=True), 0.7, SHAPE, 10)
  (tmp_path / 'shards').mkdir()
  np.savez(tmp_path / 'shards' / '0.npz', image=images[:25], label=labels[:25])
  np.savez(tmp_path / 'shards' / '1.npz', image=images[25:], label=labels[25:])
  shards = extra_lib.ExtraSet(str(tmp_path / 'shards'), 0.7, SHAPE, 10)
  extra_lib.write_array_record(str(tmp_path / 'c.array_record'), images, labels)
  records = extra_lib.ExtraSet(str(tmp_path / 'c.array_record'), 0.7, SHAPE, 10)
  idx = np.array([39, 0, 24, 25, 7, 30])
  for s in (stored, compressed, shards, records):
    assert s.size == 40
    got_images, got_labels = s.read(idx)
    np.testing.assert_array_equal(got_images, images[idx])
    np.testing.assert_array_equal(got_labels, labels[idx])


def test_bad_files_and_values_are_clear_errors(tmp_path):
  def opens(path, shape=SHAPE):
    return extra_lib.ExtraSet(str(path), 0.7, shape, 10)

  images, labels = _extra_arrays(8)
  with pytest.raises(errors.ConfigError, match='does not exist'):
    opens(tmp_path / 'missing.npz')
  (tmp_path / 'x.h5').write_bytes(b'x')
  with pytest.raises(errors.ConfigError, match='unknown format.*np.savez'):
    opens(tmp_path / 'x.h5')
  np.savez(tmp_path / 'keys.npz', x=images, y=labels)
  with pytest.raises(errors.ConfigError, match='needs `image`'):
    opens(tmp_path / 'keys.npz')
  np.savez(tmp_path / 'chw.npz', image=images.transpose(0, 3, 1, 2), label=labels)
  with pytest.raises(errors.ConfigError, match=r'channels first.*transpose'):
    opens(tmp_path / 'chw.npz')
  with pytest.raises(errors.ConfigError, match=r'shape \(8, 28, 28, 1\); this dataset needs'):
    opens(_npz(tmp_path / 'ok.npz', n=8), (32, 32, 3))
  np.savez(tmp_path / 'float.npz', image=images / 255.0, label=labels)
  with pytest.raises(errors.ConfigError, match=r'float64; extra images must be uint8 in \[0, 255'):
    opens(tmp_path / 'float.npz')
  np.savez(tmp_path / 'range.npz', image=images, label=labels + 5)
  with pytest.raises(errors.ConfigError, match=r'label 10 of example 5 is outside \[0, 10\)'):
    opens(tmp_path / 'range.npz')
  np.savez(tmp_path / 'count.npz', image=images, label=labels[:5])
  with pytest.raises(errors.ConfigError, match='one per image'):
    opens(tmp_path / 'count.npz')
  extra_lib.write_array_record(str(tmp_path / 'big.array_record'), images, labels + 5)
  with pytest.raises(errors.ConfigError, match='outside'):
    opens(tmp_path / 'big.array_record').read(np.arange(8))
  with pytest.raises(errors.ConfigError, match='image bytes'):
    opens(tmp_path / 'big.array_record', (32, 32, 3)).read(np.arange(2))


@pytest.mark.parametrize('changes,match', [
    ({'fraction': 1.0}, r'fraction=1.0 must be a number in \[0, 1\)'),
    ({'fraction': -0.1}, r'must be a number in \[0, 1\)'),
    ({'path': None}, 'data.extra.path is not set.*--config.data.extra.path'),
    ({'path': 'nowhere.npz'}, 'does not exist'),
    ({'synthetic': 10, 'path': 'HERE'}, 'set one of them'),
    ({'synthetic': -1}, 'synthetic=-1'),
    ({'fraction': 0.99, 'synthetic': 10}, 'gives 0 real and 8 extra rows'),
])
def test_config_errors_name_the_fix(tmp_path, changes, match):
  config = helpers.quick_config()
  path = _npz(tmp_path / 'x.npz')
  config.data.extra.update({k: path if v == 'HERE' else v for k, v in changes.items()})
  with pytest.raises(errors.ConfigError, match=match):
    validation.validate(config, 1)


def test_fraction_zero_or_no_path_is_the_real_data_alone(tmp_path):
  config = helpers.quick_config()
  validation.validate(config, 1)
  assert not extra_lib.active(config.data.extra)
  config.data.extra.update(path=None, fraction=0.0)  # a paper row run without the extra data
  validation.validate(config, 1)
  assert not extra_lib.active(config.data.extra) and not extra_lib.active(None)


def _fit(config, workdir, dataset):
  mesh = parallel.make_mesh()
  model = models.build(config.model, num_classes=10, mean=dataset.mean, std=dataset.std)
  state = train_loop.fit(config, str(workdir), dataset, model, mesh, progress=False).state
  return [np.asarray(a) for a in jax.tree.leaves(jax.device_get(state.params))]


def test_training_with_extra_data_resumes_bitwise_and_uses_it(tmp_path):
  cfg = {'train.steps': 4, 'checkpoint.every_steps': 2, 'defense.name': 'standard'}
  config = helpers.quick_config(**cfg)
  dataset = _with_extra(helpers.tiny_dataset(), _npz(tmp_path / 'x.npz'))
  straight = _fit(config, tmp_path / 'a', dataset)
  # Killed after the checkpoint of step 2 (a fresh ExtraSet, as a restarted process opens).
  _fit(helpers.quick_config(**{**cfg, 'train.steps': 2}), tmp_path / 'b', dataset)
  resumed = _fit(config, tmp_path / 'b', _with_extra(helpers.tiny_dataset(),
                                                     str(tmp_path / 'x.npz')))
  for a, b in zip(straight, resumed):
    np.testing.assert_array_equal(a, b)
  plain = _fit(config, tmp_path / 'c', helpers.tiny_dataset())
  assert any(not np.array_equal(a, b) for a, b in zip(straight, plain))


def test_synthetic_extra_set_is_deterministic_and_cached(tmp_path):
  base = helpers.tiny_dataset(n_train=64)
  a = extra_lib.make_synthetic(base.train_images, base.train_labels, 30)
  b = extra_lib.make_synthetic(base.train_images, base.train_labels, 30)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert set(a[1]) <= set(base.train_labels) and a[0].shape == (30,) + SHAPE
  extra = extra_lib.open_extra(_cfg(synthetic=30), base, str(tmp_path))
  assert extra.size == 30 and 'synthetic_tiny_30.npz' in extra.path
  np.testing.assert_array_equal(extra.read(np.arange(30))[0], a[0])


def _loss_terms(defense_name, amount, beta=6.0):
  config = helpers.quick_config(**{'defense.name': defense_name, 'defense.beta': beta,
                                   'defense.label_smoothing': amount})
  defense = defenses.build(config)
  w = jax.random.normal(jax.random.key(0), (28 * 28, 10))

  def forward(v):
    return v.reshape(v.shape[0], -1) @ w, {}

  x = jax.random.uniform(jax.random.key(1), (6,) + SHAPE)
  x_adv = jnp.clip(x + 0.05, 0, 1)
  onehot = jax.nn.one_hot(jnp.arange(6) % 10, 10)
  per_example, _, _ = defense.loss(forward, x, x_adv, onehot)
  return per_example, forward(x)[0], forward(x_adv)[0], onehot


def test_label_smoothing_smooths_the_cross_entropy_and_nothing_else():
  plain, logits, _, onehot = _loss_terms('standard', 0.0)
  np.testing.assert_array_equal(plain, objectives.cross_entropy(logits, onehot))  # 0: as before
  smooth, _, _, _ = _loss_terms('standard', 0.1)
  targets = 0.9 * onehot + 0.01
  np.testing.assert_allclose(smooth, -jnp.sum(targets * jax.nn.log_softmax(logits), -1),
                             rtol=1e-6)
  # TRADES: only the clean cross-entropy changes; the KL term is the same.
  t0, logits, adv_logits, onehot = _loss_terms('trades', 0.0)
  t1, _, _, _ = _loss_terms('trades', 0.1)
  kl = trades.kl_divergence(logits, adv_logits)
  np.testing.assert_allclose(t0 - 6.0 * kl, objectives.cross_entropy(logits, onehot), rtol=1e-5)
  np.testing.assert_allclose(t1 - 6.0 * kl, -jnp.sum(targets * jax.nn.log_softmax(logits), -1),
                             rtol=1e-5)


@pytest.mark.parametrize('changes,match', [
    ({'defense.label_smoothing': 1.0}, r'label_smoothing=1.0 must be a number in \[0, 1\)'),
    ({'defense.label_smoothing': 0.1, 'defense.name': 'mart'}, 'does not apply to defense mart'),
    ({'defense.label_smoothing': 0.1, 'defense.name': 'awp', 'defense.awp_base': 'mart'},
     'awp_base mart'),
])
def test_label_smoothing_errors(changes, match):
  with pytest.raises(errors.ConfigError, match=match):
    validation.validate(helpers.quick_config(**changes), 1)
