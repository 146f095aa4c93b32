"""robust_jax.models.fast_ops: the same values, input gradients and weight gradients as lax/flax.

Each custom op is compared with the plain version it replaces on the shapes, strides and paddings
the models use (and a few awkward ones: odd sizes, strides that leave rows unused, ties in max
pooling); the models' parameter trees, logits and gradients must not depend on `fast_ops`.
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from robust_jax import models
from robust_jax.models import fast_ops

DIMS = ('NHWC', 'HWIO', 'NHWC')


def _close(actual, expected, rtol=1e-5):
  """Equal up to float32 summation order: relative to the largest entry of `expected`."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape
  scale = max(np.abs(expected).max(), 1e-30)
  np.testing.assert_allclose(actual / scale, expected / scale, rtol=0, atol=rtol)


def _value_and_grads(fn, x, w, seed=3):
  """fn(x, w), and the gradients of <fn(x, w), g> for a random cotangent g."""
  y, vjp = jax.vjp(fn, x, w)
  g = jax.random.normal(jax.random.key(seed), y.shape, y.dtype)
  return (y,) + vjp(g)


# (input HxW, C_in, C_out, kernel, stride, padding): the models' convolutions, then awkward cases.
CONVS = [
    ((28, 28), 1, 8, 5, 1, 'SAME'),         # madry_cnn conv 1
    ((14, 14), 8, 16, 5, 1, 'SAME'),        # madry_cnn conv 2
    ((28, 28), 1, 8, 4, 2, ((1, 1), (1, 1))),   # small_cnn conv 1
    ((14, 14), 8, 16, 4, 2, ((1, 1), (1, 1))),  # small_cnn conv 2
    ((12, 12), 8, 8, 3, 1, 'VALID'),        # trades_cnn
    ((8, 8), 3, 8, 3, 1, ((1, 1), (1, 1))),     # ResNet stem (3 channels)
    ((8, 8), 8, 16, 3, 2, ((1, 1), (1, 1))),    # ResNet strided conv1
    ((8, 8), 8, 16, 1, 2, ((0, 0), (0, 0))),    # ResNet shortcut
    ((9, 7), 6, 5, 3, 2, ((1, 1), (1, 1))),     # odd sizes
    ((10, 11), 6, 5, 4, 3, ((0, 2), (1, 0))),   # stride leaves rows unused, asymmetric padding
    ((7, 7), 2, 3, 5, 2, 'SAME'),
]


def _conv_args(case, seed=0, batch=2):
  hw, c_in, c_out, k, s, padding = case
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (batch,) + hw + (c_in,), jnp.float32)
  w = jax.random.normal(kw, (k, k, c_in, c_out), jnp.float32)
  pads = fast_ops._explicit_pads(padding, hw, (k, k), (s, s))
  return x, w, (s, s), padding, pads


def _lax_conv(strides, padding):
  return lambda x, w: lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMS)


@pytest.mark.parametrize('case', CONVS, ids=lambda c: f'{c[0][0]}x{c[0][1]}x{c[1]}-k{c[3]}s{c[4]}')
def test_conv_variants_match_lax(case):
  x, w, strides, padding, pads = _conv_args(case)
  ops = [fast_ops.conv, fast_ops.patches_conv, fast_ops._cpu_conv]  # pylint: disable=protected-access
  if case[3] % case[4] == 0:  # kernel a multiple of the stride
    ops += [fast_ops.space_to_depth_conv, fast_ops.strided_conv]
  expected, *results = jax.jit(lambda x, w: [_value_and_grads(_lax_conv(strides, padding), x, w)]
                               + [_value_and_grads(lambda x, w, op=op: op(x, w, strides, pads),
                                                   x, w) for op in ops])(x, w)
  for op, got in zip(ops, results):
    for name, a, b in zip(('value', 'input grad', 'weight grad'), got, expected):
      try:
        _close(a, b)
      except AssertionError as e:
        raise AssertionError(f'{op.__name__} {name}') from e


def test_conv_second_derivative_of_input_matches_lax():
  """Gradients of gradients (e.g. TRADES-like regularisers) still agree."""
  x, w, strides, padding, pads = _conv_args(CONVS[3])

  def input_grad_norm(op):
    return lambda x, w: jnp.sum(jax.grad(lambda x: jnp.sum(op(x, w) ** 2))(x) ** 2)
  plain = jax.jit(jax.grad(input_grad_norm(_lax_conv(strides, padding)), argnums=(0, 1)))(x, w)
  for op in (fast_ops.conv, fast_ops.strided_conv):
    fast = jax.jit(jax.grad(input_grad_norm(lambda x, w, op=op: op(x, w, strides, pads)),
                            argnums=(0, 1)))(x, w)
    for a, b in zip(fast, plain):
      _close(a, b, rtol=1e-4)


def _lowered(fn, platform, *args):
  return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def test_conv_general_dilated_dispatch():
  """On CPU: few input channels -> patches matmul, else the custom-VJP conv; elsewhere -> lax."""
  dn = lax.conv_dimension_numbers((1, 8, 8, 1), (3, 3, 1, 4), DIMS)
  x1, w1 = jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 1, 4))
  x16, w16 = jnp.ones((1, 8, 8, 16)), jnp.ones((3, 3, 16, 4))

  def input_grad(w, **kw):
    return lambda x: jax.grad(lambda x: jnp.sum(fast_ops.conv_general_dilated(
        x, w, (2, 2), 'SAME', dimension_numbers=dn, **kw) ** 2))(x)
  patches = _lowered(input_grad(w1), 'cpu', x1)
  assert 'stablehlo.convolution' not in patches and 'stablehlo.dot_general' in patches
  custom = _lowered(input_grad(w16), 'cpu', x16)
  assert 'optimization_barrier' in custom and 'lhs_dilate = [2, 2]' not in custom
  # A kernel that is a multiple of the stride, few input channels: space-to-depth (patches), so no
  # strided convolution at all.
  w4 = jnp.ones((4, 4, 1, 4))
  s2d = _lowered(input_grad(w4), 'cpu', x1)
  assert 'stablehlo.convolution' not in s2d and 'stablehlo.transpose' in s2d
  # ... many input channels: the strided forward pass, the space-to-depth input gradient (stride 1,
  # no dilated input).
  w4 = jnp.ones((4, 4, 16, 4))
  strided = [line for line in _lowered(input_grad(w4), 'cpu', x16).splitlines()
             if 'stablehlo.convolution' in line]
  assert len(strided) == 2, strided
  assert 'stride = [2, 2]' in strided[0] and 'stride = [1, 1]' in strided[1]
  assert all('lhs_dilate = [1, 1]' in line for line in strided)
  for platform in ('cuda', 'rocm', 'tpu'):   # cuDNN & co. keep their own gradients
    for x, w in ((x1, w1), (x16, w16)):
      other = _lowered(input_grad(w), platform, x)
      assert 'optimization_barrier' not in other and 'stablehlo.convolution' in other
  dilated = _lowered(input_grad(w16, rhs_dilation=(2, 2)), 'cpu', x16)
  assert 'optimization_barrier' not in dilated
  np.testing.assert_array_equal(   # the dilated fallback computes what lax computes
      fast_ops.conv_general_dilated(x16, w16, (1, 1), 'SAME', (1, 1), (2, 2), dn),
      lax.conv_general_dilated(x16, w16, (1, 1), 'SAME', (1, 1), (2, 2), dn))


@pytest.mark.parametrize('rows', [1, 8, 32, 50, 63])
def test_rows_floor_dot_gives_the_bits_of_a_64_row_batch_and_plain_gradients(rows):
  # small_cnn's Dense(1568 -> 100): XLA:CPU's matmul rounds differently below 51 rows. The forward
  # pass of a short batch must be the first rows of the 64-row product, bit for bit; the gradients
  # those of the unpadded product (jax.vjp of jnp.dot), bit for bit.
  x = jax.random.normal(jax.random.key(0), (fast_ops.DOT_MIN_ROWS, 1568))
  w = jax.random.normal(jax.random.key(1), (1568, 100))
  full = np.asarray(jax.jit(jnp.dot)(x, w))

  def value_and_grads(dot):
    return jax.jit(lambda x, w: _value_and_grads(dot, x, w))(x[:rows], w)
  fast = value_and_grads(fast_ops.rows_floor_dot)
  plain = value_and_grads(jnp.dot)
  np.testing.assert_array_equal(fast[0], full[:rows])
  _close(fast[0], plain[0])
  np.testing.assert_array_equal(fast[1], plain[1])
  np.testing.assert_array_equal(fast[2], plain[2])


def test_rows_floor_dot_under_vmap_pools_the_mapped_rows():
  # A model vmapped over single examples (robust_jax.evaluate's random functions), restarts or
  # EOT draws: the mapped axis joins the rows, so 8 vmapped one-row products are one padded
  # 64-row product (not 8 of them), with the bits of the 64-row batch; gradients as plain vmap's.
  x = jax.random.normal(jax.random.key(0), (fast_ops.DOT_MIN_ROWS, 16))
  w = jax.random.normal(jax.random.key(1), (16, 4))
  full = np.asarray(jax.jit(jnp.dot)(x, w))
  one_row = lambda dot: jax.vmap(lambda xi: dot(xi[None], w)[0])  # noqa: E731
  np.testing.assert_array_equal(jax.jit(one_row(fast_ops.rows_floor_dot))(x[:8]), full[:8])
  text = _lowered(one_row(fast_ops.rows_floor_dot), 'cpu', x[:8])
  assert 'tensor<64x16xf32>' in text and 'tensor<8x64x16xf32>' not in text
  restarts = x.reshape(4, 16, 16)   # 4 mapped blocks of 16 rows: 64 rows, no padding
  pooled = jax.jit(jax.vmap(lambda xs: fast_ops.rows_floor_dot(xs, w)))(restarts)
  np.testing.assert_array_equal(pooled, full.reshape(4, 16, 4))

  def grads(dot):
    return jax.jit(jax.vmap(jax.grad(lambda xi, w: jnp.sum(dot(xi[None], w) ** 2), (0, 1)),
                            in_axes=(0, None)))(x[:8], w)
  for fast, plain in zip(grads(fast_ops.rows_floor_dot), grads(jnp.dot)):
    np.testing.assert_array_equal(fast, plain)
  ws = jax.random.normal(jax.random.key(2), (3, 16, 4))   # a kernel per mapped element
  _close(jax.vmap(lambda w: fast_ops.rows_floor_dot(x[:5], w))(ws),
         jnp.einsum('bk,vkn->vbn', x[:5], ws))


def test_dot_general_dispatch():
  """On CPU, a Dense product of fewer than DOT_MIN_ROWS rows is padded; otherwise it is lax's."""
  dims = (((1,), (0,)), ((), ()))
  w = jnp.ones((16, 4))

  def dense(x):
    return jax.grad(lambda x: jnp.sum(fast_ops.dot_general(x, w, dims) ** 2))(x)
  short = _lowered(dense, 'cpu', jnp.ones((8, 16)))
  assert 'optimization_barrier' in short and 'stablehlo.pad' in short
  for platform, rows in (('cpu', fast_ops.DOT_MIN_ROWS), ('cuda', 8), ('tpu', 8)):
    other = _lowered(dense, platform, jnp.ones((rows, 16)))
    assert 'optimization_barrier' not in other and 'stablehlo.pad' not in other
  x3 = jnp.ones((2, 3, 16))   # not a 2-D product: lax's
  np.testing.assert_array_equal(fast_ops.dot_general(x3, w, (((2,), (0,)), ((), ()))), x3 @ w)


@pytest.mark.parametrize('name', ['small_cnn', 'trades_cnn'])
def test_cnn_logits_and_input_gradients_do_not_depend_on_the_batch_size(name):
  # What lets the evaluation run a cascade's few points still robust below 64 rows on these
  # models (eval.loop.batch_invariance, the check it runs on the model itself); without
  # fast_ops.dot_general their logits changed below 51 and 24 rows on an AVX-512 EPYC.
  from robust_jax.eval import loop  # pylint: disable=g-import-not-at-top
  model = models.build(ml_collections.ConfigDict(dict(name=name)), num_classes=10,
                       mean=(0.3,), std=(0.35,))
  x = jax.random.uniform(jax.random.key(0), (loop.MIN_BUCKET, 28, 28, 1))
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(x)
  ok = loop.batch_invariance(lambda v: lambda x: model.apply(v, x, train=False), variables, x)
  assert [size for size in (8, 16, 24, 32, 48, 56) if not ok(size)] == []


@pytest.mark.parametrize('shape,window', [((2, 8, 8, 3), 2), ((2, 7, 9, 4), 2), ((1, 9, 9, 2), 3)])
@pytest.mark.parametrize('ties', [False, True], ids=['distinct', 'ties'])
def test_max_pool_matches_flax(shape, window, ties):
  x = jax.random.normal(jax.random.key(0), shape)
  if ties:  # few distinct values: many blocks have several maxima (as after a ReLU)
    x = jnp.maximum(jnp.round(x), 0.0)

  def grads(pool):
    y, vjp = jax.vjp(pool, x)
    return y, vjp(jax.random.normal(jax.random.key(1), y.shape))[0]
  plain = jax.jit(lambda: grads(lambda x: nn.max_pool(x, (window,) * 2, strides=(window,) * 2)))()
  fast = jax.jit(lambda: grads(lambda x: fast_ops.max_pool(x, window)))()
  np.testing.assert_array_equal(fast[0], plain[0])
  np.testing.assert_array_equal(fast[1], plain[1])   # only selections: exact, ties included


def _model(name, fast, dtype=jnp.float32):
  cfg = ml_collections.ConfigDict(dict(name=name, depth=10, width=1, fast_ops=fast))
  return models.build(cfg, num_classes=10, mean=(0.5,), std=(0.25,), dtype=dtype)


# Small inputs keep compiles short; the CNNs' flattened size follows the input.
SHAPES = {'small_cnn': (16, 16, 1), 'madry_cnn': (16, 16, 1), 'trades_cnn': (16, 16, 1),
          'preact_resnet18': (8, 8, 3), 'wide_resnet': (8, 8, 3), 'dm_wide_resnet': (8, 8, 3)}


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n == 'preact_resnet18' else n  # blocks as WRN
    for n in sorted(models.MODELS)])
def test_models_same_params_logits_and_gradients(name):
  shape = SHAPES[name]
  fast, plain = _model(name, True), _model(name, False)
  assert fast.fast_ops and not plain.fast_ops
  x = jax.random.uniform(jax.random.key(0), (2,) + shape)
  y = jnp.array([3, 7])
  variables, fast_vars = jax.jit(lambda x: [m.init(jax.random.key(1), x, train=False)
                                            for m in (plain, fast)])(x)
  # Same tree, shapes and initial values: checkpoints of either load into the other.
  assert jax.tree.structure(fast_vars) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, fast_vars, variables)

  def grads(model, params, x):
    def fn(params, x):
      v = {**variables, 'params': params}
      if 'batch_stats' in variables:   # training mode: BatchNorm on batch statistics
        logits, _ = model.apply(v, x, train=True, mutable=['batch_stats'])
      else:
        logits = model.apply(v, x, train=False)
      onehot = jax.nn.one_hot(y, 10)
      return -jnp.sum(onehot * jax.nn.log_softmax(logits)), logits
    return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(params, x)
  ((_, logits_fast), (gp_fast, gx_fast)), ((_, logits_plain), (gp_plain, gx_plain)) = jax.jit(
      lambda p, x: [grads(m, p, x) for m in (fast, plain)])(variables['params'], x)
  _close(logits_fast, logits_plain)
  _close(gx_fast, gx_plain, rtol=1e-4)
  flat_fast = flax.traverse_util.flatten_dict(gp_fast)
  for path, g in flax.traverse_util.flatten_dict(gp_plain).items():
    try:
      _close(flat_fast[path], g, rtol=1e-4)
    except AssertionError as e:
      raise AssertionError(f'weight gradient of {"/".join(path)}') from e


def test_bfloat16_fast_model_params_float32_logits_float32():
  model = _model('madry_cnn', True, jnp.bfloat16)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))

  def fn(params, x):
    logits = model.apply({'params': params}, x, train=False)
    return jnp.sum(logits ** 2), logits
  (_, logits), (gp, gx) = jax.jit(jax.value_and_grad(fn, (0, 1), has_aux=True))(
      variables['params'], x)
  assert logits.dtype == jnp.float32 and gx.dtype == jnp.float32
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(gp))
  # bfloat16 logits track the float32 ones to bfloat16 precision.
  ref = _model('madry_cnn', True).apply(variables, x, train=False)
  assert np.abs(logits - ref).max() < 0.05 * np.abs(ref).max() + 1e-3
