"""A JPEG-like compression round trip written in JAX (Das et al. 2017; Guo et al. 2018).

    x_jpeg = jpeg.compress(x, quality=75)      # x: f32[B,H,W,C] in [0,1] -> same shape, [0,1]

What it does, per channel, as a baseline JPEG codec does (ISO/IEC 10918-1, the IJG library's
quality scaling):
  1. quantise the input to 8 bits (the codec reads uint8 pixels) and shift to [-128, 127];
  2. pad H and W to multiples of 8 by repeating the last row/column, cut into 8x8 blocks;
  3. 2-D orthonormal DCT-II of each block;
  4. divide by the quantisation table and round (the lossy step), multiply back;
  5. inverse DCT, shift back, round to 8 bits, crop, clip to [0,1].
The table is the standard luminance table of Annex K scaled by `quality` (1..100) as in IJG's
`jpeg_quality_scaling`: s = 5000/q for q < 50, else 200 - 2q; entries floor((t*s + 50)/100)
clipped to [1, 255]. Three-channel inputs are converted to YCbCr (JFIF) first; Y uses the
luminance table and Cb/Cr the standard chrominance table. Unlike a real codec there is no chroma
subsampling and no entropy coding (lossless, so irrelevant to the output). On grayscale images the
round trip agrees with libjpeg's (through Pillow) to a fraction of a grey level on average
(tests/test_transforms.py).

The rounding makes the gradient zero almost everywhere: a naive gradient attack sees no signal
(gradient masking, Athalye et al. 2018); BPDA with the identity is the adaptive attack.
"""

import jax.numpy as jnp
import numpy as np

LUMINANCE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99]], np.float64)

CHROMINANCE = np.full((8, 8), 99.0)
CHROMINANCE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]

# JFIF RGB <-> YCbCr (full range; Cb and Cr offset by 128 on the 0..255 scale).
_TO_YCC = np.array([[0.299, 0.587, 0.114],
                    [-0.168736, -0.331264, 0.5],
                    [0.5, -0.418688, -0.081312]])


def quant_table(quality, base=LUMINANCE):
  """The IJG-scaled quantisation table, f64[8,8] with entries in [1, 255]."""
  scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
  return np.clip(np.floor((base * scale + 50.0) / 100.0), 1.0, 255.0)


def dct_matrix(n=8):
  """Orthonormal DCT-II matrix M (f64[n,n]): the DCT of a block B is M @ B @ M.T."""
  k = np.arange(n)[:, None]
  i = np.arange(n)[None, :]
  m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
  m[0] /= np.sqrt(2.0)
  return m


def _round_trip(v, tables):
  """v: f32[B,H8,W8,C] on the 0..255 scale minus 128; tables: f32[C,8,8]."""
  b, h, w, c = v.shape
  blocks = v.reshape(b, h // 8, 8, w // 8, 8, c)
  m = jnp.asarray(dct_matrix(), jnp.float32)
  coeffs = jnp.einsum('uk,bikjlc,vl->bijcuv', m, blocks, m)
  q = jnp.asarray(tables, jnp.float32)
  coeffs = jnp.round(coeffs / q) * q
  blocks = jnp.einsum('uk,bijcuv,vl->bikjlc', m, coeffs, m)
  return blocks.reshape(b, h, w, c)


def compress(x, quality):
  """The JPEG round trip of x: f32[B,H,W,C] in [0,1], C in {1, 3} (others: per channel, luma
  table) -> f32[B,H,W,C] in [0,1], multiples of 1/255."""
  b, h, w, c = x.shape
  v = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0)
  luma, chroma = quant_table(quality), quant_table(quality, CHROMINANCE)
  color = c == 3
  if color:
    v = jnp.einsum('ij,bhwj->bhwi', jnp.asarray(_TO_YCC, jnp.float32), v)
    v = jnp.clip(jnp.round(v + jnp.asarray([0.0, 128.0, 128.0], jnp.float32)), 0.0, 255.0)
    tables = np.stack([luma, chroma, chroma])
  else:
    tables = np.stack([luma] * c)
  ph, pw = -h % 8, -w % 8
  v = jnp.pad(v - 128.0, ((0, 0), (0, ph), (0, pw), (0, 0)), mode='edge')
  v = _round_trip(v, tables)[:, :h, :w, :] + 128.0
  if color:
    v = jnp.clip(jnp.round(v), 0.0, 255.0) - jnp.asarray([0.0, 128.0, 128.0], jnp.float32)
    v = jnp.einsum('ij,bhwj->bhwi', jnp.asarray(np.linalg.inv(_TO_YCC), jnp.float32), v)
  return jnp.clip(jnp.round(v), 0.0, 255.0) / 255.0
