"""Input-transformation defenses: the transforms, the wrapped model, BPDA/EOT views, evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import errors
from robust_jax import experiment
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax.defenses import jpeg
from robust_jax.defenses import transforms
from robust_jax.eval import robust
from robust_jax.eval import sanity
from tests import helpers


def _model(name, **fields):
  c = helpers.quick_config(**{'defense.name': name, **{f'defense.{k}': v for k, v in
                                                         fields.items()}})
  model = experiment.deployed_model(c, 10, (0.5,), (0.25,))
  v = helpers.init_variables(model, jax.random.key(0), (28, 28, 1))
  return c, model, v['params']


def test_bit_depth_values_and_bpda_gradient():
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  q = transforms.bit_depth(x, 3)
  np.testing.assert_allclose(np.unique(np.asarray(q) * 7), np.arange(8), atol=1e-5)
  _, model, params = _model('bit_depth', bits=3)
  naive = model_fns.logits_fn(model, params, {})
  adaptive = model_fns.logits_fn(model, params, {}, bpda=True)
  np.testing.assert_array_equal(naive(x), adaptive(x))
  g_naive = jax.grad(lambda v: naive(v).sum())(x)
  g_bpda = jax.grad(lambda v: adaptive(v).sum())(x)
  assert float(jnp.abs(g_naive).max()) == 0.0  # rounding masks the gradient
  assert float(jnp.abs(g_bpda).max()) > 0.0


def test_median_filter_matches_numpy():
  x = np.random.default_rng(0).uniform(size=(2, 6, 7, 2)).astype(np.float32)
  out = np.asarray(transforms.median_filter(jnp.asarray(x), 3))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode='reflect')
  for i in range(6):
    for j in range(7):
      np.testing.assert_allclose(out[:, i, j], np.median(padded[:, i:i + 3, j:j + 3], axis=(1, 2)),
                                 rtol=1e-6)


def test_bad_transform_field_is_a_config_error():
  c = helpers.quick_config(**{'defense.name': 'bit_depth'})
  c.defense.bits = 0
  with pytest.raises(errors.ConfigError, match='defense.bits'):
    transforms.from_config(c)


def test_per_example_keys_depend_on_content_not_batch():
  x = jax.random.uniform(jax.random.key(1), (4, 5, 5, 1))
  keys = jax.random.split(jax.random.key(2), 4)
  a = jax.random.key_data(transforms.per_example_keys(keys, x))
  b = jax.random.key_data(transforms.per_example_keys(keys[1:3], x[1:3]))
  np.testing.assert_array_equal(a[1:3], b)
  c = jax.random.key_data(transforms.per_example_keys(keys, x.at[0].add(0.01)))
  assert not np.array_equal(a[0], c[0]) and np.array_equal(a[1:], c[1:])


@pytest.mark.slow  # a whole evaluation with every sanity check: about a minute on 2 cores
def test_evaluation_flags_a_naive_attack_on_a_masked_transform():
  c, model, params = _model('bit_depth', bits=1)
  c.eval.sanity_checks = True
  c.eval.sanity_examples = 8
  c.eval.attacks = {'naive': dict(name='pgd', eps=0.3, steps=3, step_size=0.1)}
  dataset = helpers.tiny_dataset(n_test=16)
  mesh = parallel.make_mesh()
  run = lambda cfg: robust.evaluate(model, params, {}, dataset, cfg, mesh, progress=False)[0]
  naive = run(c)
  check = {k['name']: k for k in naive['sanity_checks']}['adaptive attack on the transform']
  assert check['verdict'] == 'FAIL' and 'BPDA' in check['detail']
  c.eval.attacks = {'naive': dict(name='pgd', eps=0.3, steps=3, step_size=0.1),
                    'adaptive': dict(name='pgd', eps=0.3, steps=3, step_size=0.1, bpda=True)}
  both = run(c)
  check = {k['name']: k for k in both['sanity_checks']}['adaptive attack on the transform']
  assert check['verdict'] == 'PASS'
  assert (both['attacks']['adaptive']['accuracy'] <= both['attacks']['naive']['accuracy'])


# --- thermometer, jpeg, random_resize, gaussian_noise (issue 4, part 2) ---


def _images(shape=(2, 28, 28, 1), seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


def _masked_and_bpda_gradients(name, **fields):
  """(naive input gradient, BPDA input gradient) of the summed logits of a fresh model."""
  _, model, params = _model(name, **fields)
  x = _images()
  grads = []
  for bpda in (False, True):
    fn = model_fns.logits_fn(model, params, {}, bpda=bpda)
    grads.append(np.asarray(jax.grad(lambda v, f=fn: f(v).sum())(x)))
  return grads


def test_thermometer_matches_numpy_layout_and_normalisation():
  x = np.array(_images((2, 5, 6, 2)))
  x[0, 0, 0] = [0.0, 1.0]
  x[0, 0, 1] = [0.25, 0.5]  # exactly on thresholds of 4 levels: those channels switch on
  out = np.asarray(transforms.thermometer(jnp.asarray(x), 4))
  assert out.shape == (2, 5, 6, 8)
  for c in range(2):
    for j in range(4):
      np.testing.assert_array_equal(out[..., c * 4 + j], (x[..., c] >= j / 4).astype(np.float32))
  np.testing.assert_array_equal(out[0, 0, 1], [1, 1, 0, 0, 1, 1, 1, 0])
  _, model, _ = _model('thermometer', levels=4)
  assert model.net.mean == (0.5,) and model.net.std == (0.5,)  # codes, not pixels


def test_soft_thermometer_jacobian_and_bpda_reaches_the_input():
  levels = 4
  v = jnp.asarray([0.1, 0.3, 0.6, 0.9, 0.99]).reshape(1, 1, 5, 1)
  soft = transforms.soft_thermometer(v, levels)
  assert soft.shape == transforms.thermometer(v, levels).shape
  # d(sum of the channels)/dv: 1 per threshold j/4 below v, so the top bucket has a gradient too.
  per_pixel = np.asarray(jax.vmap(jax.grad(
      lambda a: transforms.soft_thermometer(a.reshape(1, 1, 1, 1), levels).sum()))(v.ravel()))
  np.testing.assert_array_equal(per_pixel, [1, 2, 3, 4, 4])
  naive, bpda = _masked_and_bpda_gradients('thermometer', levels=4)
  assert np.abs(naive).max() == 0.0
  assert (np.abs(bpda).reshape(2, -1).max(1) > 0).all()


def _jpeg_reference(img, quality):
  """numpy/scipy JPEG round trip of one grayscale image (float64, H and W multiples of 8), and
  a mask of the blocks with a coefficient within 1e-3 of a rounding tie (where float32 and
  float64 may round differently)."""
  from scipy.fft import dctn, idctn
  q = jpeg.quant_table(quality)
  out, tie = np.zeros(img.shape), np.zeros(img.shape, bool)
  for i in range(0, img.shape[0], 8):
    for j in range(0, img.shape[1], 8):
      d = dctn(img[i:i + 8, j:j + 8] - 128.0, norm='ortho') / q
      out[i:i + 8, j:j + 8] = idctn(np.round(d) * q, norm='ortho') + 128.0
      tie[i:i + 8, j:j + 8] = np.abs(np.abs(d - np.floor(d)) - 0.5).min() < 1e-3
  return np.clip(np.round(out), 0, 255), tie


def _smooth_uint8(shape, seed=0):
  rng = np.random.default_rng(seed)
  return np.clip(np.cumsum(rng.normal(size=shape), -2) * 12 + 128, 0, 255).round().astype(np.uint8)


def test_jpeg_matches_a_numpy_reference_and_libjpeg():
  import io
  from PIL import Image
  np.testing.assert_array_equal(jpeg.quant_table(50), jpeg.LUMINANCE)  # q = 50: the table itself
  assert jpeg.quant_table(100).max() == 1 and jpeg.quant_table(1).min() == 255
  imgs = _smooth_uint8((2, 24, 32, 1))
  for quality in (25, 75):
    out = np.asarray(jpeg.compress(jnp.asarray(imgs / 255.0, jnp.float32), quality)) * 255
    assert out.shape == imgs.shape
    np.testing.assert_allclose(out, np.round(out), atol=1e-3)  # 8-bit output
    ref, tie = zip(*[_jpeg_reference(im[..., 0].astype(np.float64), quality) for im in imgs])
    ref, tie = np.stack(ref), np.stack(tie)
    assert tie.mean() < 0.2
    np.testing.assert_allclose(out[..., 0][~tie], ref[~tie], atol=1e-3)
    pil = []
    for im in imgs:
      buf = io.BytesIO()
      Image.fromarray(im[..., 0], 'L').save(buf, 'JPEG', quality=quality)
      pil.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float64))
    distortion = np.abs(np.stack(pil) - imgs[..., 0]).mean()
    # libjpeg's integer DCT differs slightly; both lose far more than they disagree.
    assert np.abs(out[..., 0] - np.stack(pil)).mean() < min(1.0, distortion / 4)
  odd = _smooth_uint8((13, 10, 3))  # colour (YCbCr, 4:4:4) and padding to 8x8 blocks
  out = np.asarray(jpeg.compress(jnp.asarray(odd[None] / 255.0, jnp.float32), 75))[0] * 255
  buf = io.BytesIO()
  Image.fromarray(odd, 'RGB').save(buf, 'JPEG', quality=75, subsampling=0)
  pil = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float64)
  assert out.shape == odd.shape
  assert np.abs(out - pil).mean() < np.abs(pil - odd).mean() / 4


def test_jpeg_masks_gradients_and_bpda_does_not():
  naive, bpda = _masked_and_bpda_gradients('jpeg', quality=50)
  assert np.abs(naive).max() == 0.0
  assert (np.abs(bpda).reshape(2, -1).max(1) > 0).all()


def _numpy_resize_and_pad(img, size, offset):
  h, w, _ = img.shape
  out = np.zeros_like(img)
  for i in range(offset[0], offset[0] + size[0]):
    for j in range(offset[1], offset[1] + size[1]):
      sy = min(max((i - offset[0] + 0.5) * h / size[0] - 0.5, 0), h - 1)
      sx = min(max((j - offset[1] + 0.5) * w / size[1] - 0.5, 0), w - 1)
      y0, x0 = int(np.floor(sy)), int(np.floor(sx))
      y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
      fy, fx = sy - y0, sx - x0
      out[i, j] = ((1 - fy) * (1 - fx) * img[y0, x0] + (1 - fy) * fx * img[y0, x1]
                   + fy * (1 - fx) * img[y1, x0] + fy * fx * img[y1, x1])
  return out


def test_resize_and_pad_matches_numpy_and_jax_image():
  img = np.asarray(_images((1, 12, 10, 2)))[0]
  for size, offset in (((9, 7), (2, 1)), ((12, 10), (0, 0)), ((5, 10), (7, 0))):
    out = np.asarray(transforms.resize_and_pad(jnp.asarray(img), size, offset))
    np.testing.assert_allclose(out, _numpy_resize_and_pad(img, size, offset), atol=1e-5)
  out = np.asarray(transforms.resize_and_pad(jnp.asarray(img), (8, 6), (0, 0)))[:8, :6]
  ref = jax.image.resize(img, (8, 6, 2), 'linear', antialias=False)  # downscale: no clamping
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_random_resize_per_example_reproducible_and_shape_preserving():
  x = jnp.broadcast_to(_images((1, 16, 16, 1)), (6, 16, 16, 1))  # six copies of one image
  keys = jax.random.split(jax.random.key(3), 6)
  out = transforms.random_resize(x, keys, 8)
  assert out.shape == x.shape
  np.testing.assert_array_equal(out, transforms.random_resize(x, keys, 8))
  flat = np.asarray(out).reshape(6, -1)
  assert len({row.tobytes() for row in flat}) > 1  # the draws differ between examples
  # Each draw is an r x r copy (8 <= r <= 16) of the positive image on a zero canvas.
  for img in np.asarray(out)[..., 0]:
    rows, cols = (img > 0).any(1), (img > 0).any(0)
    assert 8 <= rows.sum() == cols.sum() <= 16
    np.testing.assert_array_equal(img > 0, rows[:, None] & cols[None, :])
  np.testing.assert_allclose(transforms.random_resize(x, keys, 16), x, atol=1e-6)  # r = H only
  g = jax.grad(lambda v: transforms.random_resize(v, keys, 8)[:, 3:9].sum())(x)
  g = np.asarray(g).reshape(6, -1)
  assert np.isfinite(g).all() and (np.abs(g).max(1) > 0).all()
  with pytest.raises(errors.ConfigError, match='defense.min_size=17'):
    transforms.random_resize(x, keys, 17)


def test_gaussian_noise_statistics_per_example_and_reproducible():
  x = jnp.zeros((4, 28, 28, 1))
  keys = jax.random.split(jax.random.key(4), 4)
  out = np.asarray(transforms.gaussian_noise(x, keys, 0.5))
  assert abs(out.std() - 0.5) < 0.02 and abs(out.mean()) < 0.02
  assert not np.allclose(out[0], out[1])
  np.testing.assert_array_equal(out, transforms.gaussian_noise(x, keys, 0.5))


@pytest.mark.parametrize('name', ['random_resize', 'gaussian_noise'])
def test_random_models_draw_per_key_and_eot_averages_the_draws(name):
  _, model, params = _model(name)
  x = _images()
  k1, k2 = (jax.random.split(jax.random.key(s), 2) for s in (5, 6))
  one = jax.jit(lambda k: model_fns.logits_fn(model, params, {}, keys=k)(x))
  np.testing.assert_array_equal(one(k1), one(k1))
  assert not np.allclose(one(k1), one(k2))
  eot = jax.jit(model_fns.eot_logits_fn(model, params, {}, 'eval', keys=k1, samples=4))(x)
  draws = [jax.nn.log_softmax(one(jax.vmap(jax.random.fold_in, (0, None))(k1, j)))
           for j in range(4)]
  np.testing.assert_allclose(eot, np.mean(draws, axis=0), rtol=1e-5, atol=1e-5)
  if name == 'gaussian_noise':  # (random_resize's own gradient is checked above, cheaper)
    g = jax.grad(lambda v: model_fns.eot_logits_fn(model, params, {}, 'eval', keys=k1,
                                                   samples=4)(v)[:, 0].sum())(x)
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).max()) > 0


@pytest.mark.parametrize('name,field,value', [
    ('thermometer', 'levels', 1), ('jpeg', 'quality', 0), ('jpeg', 'quality', 101),
    ('random_resize', 'min_size', 0), ('gaussian_noise', 'sigma', 0.0),
    ('gaussian_noise', 'sigma', 'big')])
def test_bad_new_transform_fields_are_config_errors(name, field, value):
  c = helpers.quick_config(**{'defense.name': name})
  c.defense[field] = value
  with pytest.raises(errors.ConfigError, match=f'defense.{field}={value!r}'):
    transforms.from_config(c)


@pytest.mark.parametrize('name,fields', [('bit_depth', {'bits': 1}),
                                         ('thermometer', {'levels': 4}),
                                         ('jpeg', {'quality': 50})])
def test_sanity_checks_flag_a_masked_transform_under_the_naive_attack(name, fields):
  """The gradient and unbounded-attack checks see the masking; BPDA's view passes both.

  The unbounded attack starts at a random point of the [0,1] box; with masked gradients it stays
  there, so it fails on the examples whose label is the class the model gives random images
  (e.g. 'bag' for Fashion-MNIST models). Here every example has that label.
  """
  c, model, params = _model(name, **fields)
  x = helpers.tiny_dataset(n_test=8).test_images.astype(np.float32) / 255.0
  naive_fn = model_fns.logits_fn(model, params, {})
  noise_class = np.bincount(np.argmax(naive_fn(_images((32, 28, 28, 1), seed=9)), -1)).argmax()
  y = np.full(8, noise_class, np.int32)
  t = model.transform
  unbounded = dict(name='pgd', norm='linf', eps=1.0, steps=30, step_size=0.05, loss='margin')
  verdicts = {}
  for bpda in (False, True):
    fn = model_fns.logits_fn(model, params, {}, bpda=bpda)
    verdicts[bpda] = (
        sanity.check_gradients(fn, jnp.asarray(x), jnp.asarray(y))['verdict'],
        sanity.check_unbounded(float(np.mean(sanity.accuracy_under(
            unbounded, fn, x, y, jax.random.key(0), 8))))['verdict'],
        sanity.check_transform_attacked(t.name, t.differentiable, t.random, bpda, False)[
            'verdict'])
  assert verdicts[False] == ('FAIL', 'FAIL', 'FAIL')
  assert verdicts[True] == ('PASS', 'PASS', 'PASS')


CONFIGS = ['bit_depth', 'thermometer', 'jpeg', 'median', 'random_resize', 'gaussian_noise']


@pytest.mark.parametrize('name', CONFIGS)
def test_defense_configs_carry_naive_and_adaptive_attacks(name):
  import importlib
  from robust_jax import attacks
  from robust_jax import validation
  c = importlib.import_module(f'configs.defenses.{name}').get_config()
  validation.validate(c, 4)
  t = transforms.from_config(c)
  assert c.defense.name == name and c.model.name == 'small_cnn' and c.train.epochs == 3
  naive = attacks.validate(c.eval.attacks.naive)
  adaptive = attacks.validate(c.eval.attacks.adaptive)
  norm, eps = ('l2', 1.0) if name == 'gaussian_noise' else ('linf', 0.1)
  for a in (naive, adaptive):
    assert (a['name'], a['steps'], a['norm'], a['eps'], a['loss']) == ('pgd', 40, norm, eps, 'ce')
  assert not naive['bpda'] and naive['eot_samples'] == 1
  assert adaptive['bpda'] == (name != 'random_resize' and name != 'gaussian_noise')
  assert (adaptive['eot_samples'] >= 10) == t.random
  checks = [sanity.check_transform_attacked(t.name, t.differentiable, t.random, a['bpda'],
                                            a['eot_samples'] > 1)['verdict']
            for a in (naive, adaptive)]
  assert checks == ['PASS' if name == 'median' else 'FAIL', 'PASS']
