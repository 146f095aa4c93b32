"""Convolution and max-pooling with gradients that XLA compiles to fast code inside attack loops.

An attack step is a forward pass plus the gradient with respect to the *input* (Madry et al. 2018);
the weight gradients are dead code there. Left to itself, XLA:CPU compiles that input gradient
badly inside a `while` loop:

- the input gradient of a convolution is a convolution with the flipped kernel whose in/out axes
  are swapped; XLA folds the swap into the convolution's dimension labels (`01oi`), which the fast
  convolution emitters do not accept, so it falls back to a slow generic loop. `conv` computes
  the flipped, transposed kernel explicitly behind `lax.optimization_barrier` in a custom VJP, so
  the gradient is an ordinary `01io` convolution. With a stride, that gradient would also need a
  dilated input (another slow path); it is computed as stride^2 stride-1 convolutions, one per
  phase of the input grid (the sub-pixel form; Shi et al. 2016);
- a strided convolution whose kernel is a multiple of the stride has a plain input gradient once
  input and kernel are cut into stride x stride blocks stacked on the channel axis
  (`space_to_depth_conv`); with many input channels its forward pass stays XLA's own strided
  convolution, which is faster there (`strided_conv`, a custom VJP);
- a convolution with one (or few) input channels runs at a fraction of the machine's speed, and its
  input gradient (a convolution with one *output* channel) even more so. `patches_conv` computes it
  as a matmul of the k*k shifted copies of the input with the kernel (im2col; Chellapilla et al.
  2006); its gradient is a matmul and a sum of padded slices;
- the gradient of `reduce_window` max-pooling is `select_and_scatter`, rewritten into a scatter on
  CPU. `max_pool` (non-overlapping windows) routes the gradient through a mask of each window's
  first maximum instead, which is what `select_and_scatter` computes;
- a dense layer's matmul rounds differently in small batches on some shapes, so an evaluation
  could not run a short subset in a short batch without changing its results (small_cnn,
  trades_cnn). `dot_general` runs the forward product of fewer than DOT_MIN_ROWS rows padded to
  DOT_MIN_ROWS.

Every op computes the same values and the same input and weight gradients as the plain lax version
(tests/test_fast_ops.py); models use them through `conv_general_dilated`, a drop-in for
`flax.linen.Conv(conv_general_dilated=...)` and `flax.linen.Dense(dot_general=...)`, so the
parameter tree does not change. The convolutions and `dot_general` are used only in programs
lowered for CPU (on GPU cuDNN's own gradients are as fast or faster); `max_pool` everywhere.
tests/test_hlo.py checks the compiled PGD loop for the slow ops.

    y = fast_ops.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=dn)  # like lax
    y = fast_ops.max_pool(x, 2)                  # x: f[B,H,W,C] -> f[B,H//2,W//2,C]
    nn.Dense(100, dot_general=fast_ops.dot_general)
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

# NHWC inputs, HWIO kernels: flax's layout.
_DIMS = ('NHWC', 'HWIO', 'NHWC')
# Up to this many kernel inputs (kh * kw * C_in), a convolution runs as a patches x kernel matmul.
PATCHES_MAX_INPUTS = 100
# ... and only with at most this many input channels (wider inputs are a proper convolution).
PATCHES_MAX_CHANNELS = 4


def _plain(x, w, strides, pads, precision):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DIMS,
                                  precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x, w, strides, pads, precision=None):
  """2-D convolution, NHWC x HWIO -> NHWC, with an input gradient XLA keeps on its fast path.

  Args:
    x: f[B,H,W,C] input.
    w: f[kh,kw,C,F] kernel.
    strides: (sh, sw).
    pads: ((lo_h, hi_h), (lo_w, hi_w)) explicit zero padding.
    precision: as for `lax.conv_general_dilated`.

  Returns:
    f[B,H',W',F], equal to `lax.conv_general_dilated(x, w, strides, pads)` in NHWC/HWIO.
  """
  return _plain(x, w, strides, pads, precision)


def _conv_fwd(x, w, strides, pads, precision):
  return _plain(x, w, strides, pads, precision), (x, w)


def _phase(k, s, lo, n, m, p):
  """One axis of the transposed convolution, restricted to the input rows s*a + p.

  Row s*a + p receives g[o] * w[i] for s*o + i - lo = s*a + p, i.e. i = r + s*t and
  o = a + q - t with r, q = divmod(p + lo, s)[::-1]: a stride-1 correlation of g with the taps
  w[r::s] in reverse order. Returns (r, (lo, hi) padding of that correlation for ceil(n/s) output
  rows), or None when no tap reaches these rows (stride larger than the kernel).
  """
  r, q = (p + lo) % s, (p + lo) // s
  taps = len(range(r, k, s))
  if not taps:
    return None
  pad_lo = taps - 1 - q
  return r, (pad_lo, -(-n // s) - m + taps - 1 - pad_lo)


def _input_grad(g, w, strides, pads, in_hw, precision):
  """The gradient of `conv` with respect to x: f[B,H,W,C] from g: f[B,H',W',F].

  A transposed convolution. With stride s > 1 it is computed as s*s stride-1 convolutions, one per
  phase of the input grid, interleaved afterwards (the sub-pixel form; Shi et al. 2016): XLA:CPU
  runs those on its fast path, unlike a convolution with a dilated input. The flipped, transposed
  kernels are computed behind an optimization barrier, so that XLA cannot fold the in/out swap
  back into the convolutions' dimension labels (`01oi`, a slow generic emitter).
  """
  (sh, sw), (kh, kw) = strides, w.shape[:2]
  b, c = g.shape[0], w.shape[2]
  phases = [(_phase(kh, sh, pads[0][0], in_hw[0], g.shape[1], p),
             _phase(kw, sw, pads[1][0], in_hw[1], g.shape[2], q))
            for p in range(sh) for q in range(sw)]
  kernels = lax.optimization_barrier(tuple(
      jnp.flip(w[ph[0]::sh, pw[0]::sw], (0, 1)).swapaxes(2, 3)
      for ph, pw in phases if ph and pw))
  rows, cols = -(-in_hw[0] // sh), -(-in_hw[1] // sw)
  outs, kernels = [], list(kernels)
  for ph, pw in phases:
    if ph and pw:
      outs.append(lax.conv_general_dilated(g, kernels.pop(0), (1, 1), (ph[1], pw[1]),
                                           dimension_numbers=_DIMS, precision=precision))
    else:
      outs.append(jnp.zeros((b, rows, cols, c), g.dtype))
  # outs[p * sw + q][:, a, e] is dx[:, sh * a + p, sw * e + q].
  dx = jnp.stack([jnp.stack(outs[p * sw:(p + 1) * sw], axis=3) for p in range(sh)], axis=2)
  return dx.reshape(b, rows * sh, cols * sw, c)[:, :in_hw[0], :in_hw[1]]


def _weight_grad(x, w, strides, pads, precision, g):
  """The weight gradient as lax computes it (dead code inside an attack, used for training)."""
  _, w_vjp = jax.vjp(lambda w: _plain(x, w, strides, pads, precision), w)
  return w_vjp(g)[0]


def _conv_bwd(strides, pads, precision, res, g):
  x, w = res
  dx = _input_grad(g, w, strides, pads, x.shape[1:3], precision)
  return dx, _weight_grad(x, w, strides, pads, precision, g)


conv.defvjp(_conv_fwd, _conv_bwd)


def patches_conv(x, w, strides, pads, precision=None):
  """The convolution of `conv` as a patches x kernel matmul (im2col), for few input channels.

  Args and result as for `conv`. Patches are `f[B,H',W',kh*kw*C]`, ordered (row, column, channel)
  like the flattened HWIO kernel. Plain autodiff gives the right gradients without a scatter: the
  transpose of a (strided) slice is a (dilated) pad.
  """
  kh, kw, c, f = w.shape
  (sh, sw) = strides
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0),) + tuple((lo, hi, 0) for lo, hi in pads)
              + ((0, 0, 0),))
  ho = (x.shape[1] - kh) // sh + 1
  wo = (x.shape[2] - kw) // sw + 1
  cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(cols, axis=-1)
  return jnp.dot(patches, w.reshape(kh * kw * c, f), precision=precision)


def _explicit_pads(padding, in_hw, kernel_hw, strides):
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _is_nhwc_hwio(dimension_numbers):
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  return tuple(dimension_numbers) == _DIMS


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
  """Drop-in for `lax.conv_general_dilated` (as `flax.linen.Conv` calls it) using the ops above.

  Compiled for CPU, plain 2-D NHWC/HWIO convolutions without dilation or groups go to
  `patches_conv` when the kernel has few inputs (the first layer of an image model) and to `conv`
  otherwise. Compiled for any other platform (cuDNN has fast gradients of its own; on an H100
  these variants made small_cnn's PGD 16% slower) and for anything else, this is
  `lax.conv_general_dilated`. The choice is made by `lax.platform_dependent` when the program is
  lowered, so a function traced once and lowered for several platforms gets each its own.
  """
  def plain(lhs, rhs):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision)
  dilated = any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
  if (lhs.ndim != 4 or dilated or feature_group_count != 1
      or not _is_nhwc_hwio(dimension_numbers)):
    return plain(lhs, rhs)
  strides = tuple(int(s) for s in window_strides)
  pads = _explicit_pads(padding, lhs.shape[1:3], rhs.shape[:2], strides)
  fast = functools.partial(_cpu_conv, strides=strides, pads=pads, precision=precision)
  return lax.platform_dependent(lhs, rhs, cpu=fast, default=plain)


def _stride1_conv(x, w, pads, precision=None):
  """A stride-1 convolution: `patches_conv` for few kernel inputs, else `conv`."""
  kh, kw, c, _ = w.shape
  if c <= PATCHES_MAX_CHANNELS and kh * kw * c <= PATCHES_MAX_INPUTS:
    return patches_conv(x, w, (1, 1), pads, precision)
  return conv(x, w, (1, 1), pads, precision)


def _cpu_conv(x, w, strides, pads, precision=None):
  """The CPU form of a convolution: stride-1 (patches or `conv`); a kernel that is a multiple of the
  stride: space-to-depth (few input channels) or `strided_conv`; else patches or phases."""
  kh, kw, c, _ = w.shape
  sh, sw = strides
  if (sh, sw) == (1, 1):
    return _stride1_conv(x, w, pads, precision)
  if kh % sh == 0 and kw % sw == 0:
    if c <= PATCHES_MAX_CHANNELS:
      return space_to_depth_conv(x, w, strides, pads, precision)
    return strided_conv(x, w, strides, pads, precision)
  if c <= PATCHES_MAX_CHANNELS and kh * kw * c <= PATCHES_MAX_INPUTS:
    return patches_conv(x, w, strides, pads, precision)
  return conv(x, w, strides, pads, precision)


def space_to_depth_conv(x, w, strides, pads, precision=None):
  """A strided convolution whose kernel size is a multiple of the stride, as a stride-1 one.

  With stride s, the padded input is cut into s x s blocks stacked on the channel axis
  (space-to-depth) and the kernel likewise, so that y[o] = sum_a x2[o + a] . w2[a]: a stride-1
  convolution with k/s taps and s*s*C channels, whose input gradient is one stride-1 convolution
  (no dilated input, no s*s phases to interleave) followed by the inverse reshape. Args and
  result as for `conv`; the input is zero-padded at the end to a multiple of the stride (those
  rows never reach a kept output).
  """
  b, h, wd, c = x.shape
  kh, kw, _, f = w.shape
  sh, sw = strides
  hp, wp = h + sum(pads[0]), wd + sum(pads[1])
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  eh, ew = -hp % sh, -wp % sw
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pads[0][0], pads[0][1] + eh, 0),
                                          (pads[1][0], pads[1][1] + ew, 0), (0, 0, 0)))
  hb, wb = (hp + eh) // sh, (wp + ew) // sw
  x = lax.optimization_barrier(x)  # padding apart from the transpose: one cheaper copy each
  x2 = x.reshape(b, hb, sh, wb, sw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hb, wb, sh * sw * c)
  w2 = w.reshape(kh // sh, sh, kw // sw, sw, c, f).transpose(0, 2, 1, 3, 4, 5).reshape(
      kh // sh, kw // sw, sh * sw * c, f)
  y = _stride1_conv(x2, w2, ((0, 0), (0, 0)), precision)
  return y[:, :ho, :wo]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def strided_conv(x, w, strides, pads, precision=None):
  """A strided convolution computed as lax does, with the input gradient of `space_to_depth_conv`.

  For inputs with many channels XLA:CPU's strided convolution is the faster forward pass
  (small_cnn's second layer, 16 -> 32 channels, 4x4 stride 2: with it small_cnn's forward pass
  is ~1.5x faster at 256 rows on one core, BENCHMARKS.md), which is all that forward-only attacks
  (Square) and the forward half of a gradient step run; its input gradient, a convolution with a
  dilated input, is not, so the gradient is the space-to-depth one.
  Args and result as for `space_to_depth_conv` (the kernel a multiple of the stride).
  """
  return _plain(x, w, strides, pads, precision)


def _strided_conv_bwd(strides, pads, precision, res, g):
  x, w = res
  _, x_vjp = jax.vjp(lambda x: space_to_depth_conv(x, w, strides, pads, precision), x)
  return x_vjp(g)[0], _weight_grad(x, w, strides, pads, precision, g)


strided_conv.defvjp(_conv_fwd, _strided_conv_bwd)  # the forward pass and residuals of `conv`


# A dense layer's forward pass runs at no fewer rows than this (`dot_general`).
DOT_MIN_ROWS = 64


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def rows_floor_dot(x, w, precision=None):
  """`x @ w` for f[B,K] x f[K,N], computed on at least DOT_MIN_ROWS rows.

  XLA:CPU picks its matmul kernel by shape, and for small_cnn's Dense(1568 -> 100) the kernel it
  takes below 51 rows rounds differently from the one at 51 rows and up (the rows are bitwise the
  same from 51 to 520 rows): the logits of a 32-row batch differ in the last bit from the same
  images' logits in a 64-row one, so the evaluation had to run the few points still robust in a
  cascade padded to 64 rows (`eval.loop.batch_invariance`). Here fewer than DOT_MIN_ROWS rows are
  zero-padded to DOT_MIN_ROWS (behind an optimization barrier, so XLA cannot slice the padding
  away again) and the first B rows of the product kept: the same bits as in a DOT_MIN_ROWS-row
  batch. The gradients are the unpadded product's (their matmuls gave the same bits at every
  batch size measured). Under `jax.vmap` (a model vmapped over single examples, restarts or EOT
  draws) the mapped axis joins the rows before padding, so V vmapped B-row products cost one
  product of max(V * B, DOT_MIN_ROWS) rows, not V padded ones.
  """
  return _padded_dot(precision)(x, w)


@functools.lru_cache(maxsize=None)
def _padded_dot(precision):
  """The forward product of `rows_floor_dot` for one `precision`, with its vmap rule."""

  @jax.custom_batching.custom_vmap
  def dot(x, w):
    b = x.shape[0]
    if b >= DOT_MIN_ROWS:
      return jnp.dot(x, w, precision=precision)
    x = lax.optimization_barrier(jnp.pad(x, ((0, DOT_MIN_ROWS - b), (0, 0))))
    return jnp.dot(x, w, precision=precision)[:b]

  @dot.def_vmap
  def _(axis_size, in_batched, x, w):
    x_batched, w_batched = in_batched
    if w_batched:  # a kernel per mapped element (an ensemble): no rows to pool
      x = x if x_batched else jnp.broadcast_to(x, (axis_size,) + x.shape)
      return jnp.einsum('vbk,vkn->vbn', x, w, precision=precision), True
    v, b, k = x.shape
    return dot(x.reshape(v * b, k), w).reshape(v, b, -1), True

  return dot


def _rows_floor_dot_fwd(x, w, precision):
  return _padded_dot(precision)(x, w), (x, w)


def _rows_floor_dot_bwd(precision, res, g):
  x, w = res
  _, vjp = jax.vjp(lambda x, w: jnp.dot(x, w, precision=precision), x, w)
  return vjp(g)


rows_floor_dot.defvjp(_rows_floor_dot_fwd, _rows_floor_dot_bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
  """Drop-in for `lax.dot_general` as `flax.linen.Dense(dot_general=...)` calls it.

  Compiled for CPU, a 2-D `lhs @ rhs` with fewer than DOT_MIN_ROWS rows is `rows_floor_dot`, so a
  batch's logits do not depend on how many rows it has; anything else, and any other platform, is
  `lax.dot_general`.
  """
  def plain(lhs, rhs):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)
  (contract_l, contract_r), batch = dimension_numbers
  if (lhs.ndim != 2 or rhs.ndim != 2 or tuple(contract_l) != (1,) or tuple(contract_r) != (0,)
      or batch != ((), ()) or lhs.shape[0] >= DOT_MIN_ROWS or preferred_element_type is not None):
    return plain(lhs, rhs)
  fast = functools.partial(rows_floor_dot, precision=precision)
  return lax.platform_dependent(lhs, rhs, cpu=fast, default=plain)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x, window=2):
  """Max-pooling over non-overlapping `window` x `window` blocks (stride = window, VALID).

  Args:
    x: f[B,H,W,C].
    window: block size k; trailing rows and columns that do not fill a block are dropped, as in
      `flax.linen.max_pool(x, (k, k), strides=(k, k))`.

  Returns:
    f[B,H//k,W//k,C]. The gradient goes to the first maximum of each block in row-major order, as
    `select_and_scatter` (the gradient of `reduce_window` max) routes it.
  """
  return _blocks(x, window).max(axis=(2, 4))


def _blocks(x, k):
  b, h, w, c = x.shape
  return x[:, :h // k * k, :w // k * k].reshape(b, h // k, k, w // k, k, c)


def _max_pool_fwd(x, window):
  y = max_pool(x, window)
  return y, (x, y)


def _max_pool_bwd(window, res, g):
  x, y = res
  blocks = _blocks(x, window)
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(window):
    row = []
    for j in range(window):
      hit = (blocks[:, :, i, :, j, :] == y) & ~taken
      taken = taken | hit
      row.append(jnp.where(hit, g, jnp.zeros((), g.dtype)))
    rows.append(jnp.stack(row, axis=3))          # [B,H',W',k,C]
  dx = jnp.stack(rows, axis=2)                     # [B,H',k,W',k,C]
  b, h, w, c = x.shape
  dx = dx.reshape(b, h // window * window, w // window * window, c)
  return (jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0))),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
