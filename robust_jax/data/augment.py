"""Per-example data augmentation under `jit`: zero-padded random crop and horizontal flip.

Each example uses its own key, so its augmentation does not depend on how the batch is split
across devices:

  keys = jax.random.split(jax.random.key(0), x.shape[0])
  x = augment(x, keys, random_crop=True, random_flip=True)   # CIFAR-style
"""

import jax
from jax import lax
import jax.numpy as jnp


def augment(x, keys, *, random_crop, random_flip, pad=4):
  """Augments a batch; the identity when both flags are False.

  Args:
    x: f32[B,H,W,C] in [0,1].
    keys: per-example PRNG keys, shape [B] (typed keys from `jax.random.key`).
    random_crop: pad each side by `pad` zeros, then crop H x W at a uniform offset in
      [0, 2*pad] along each axis.
    random_flip: mirror left-right with probability 1/2.
    pad: crop padding in pixels.
  Returns:
    f32[B,H,W,C] in [0,1]. Crop and flip draw from separate sub-keys, so enabling one does not
    change the other's draws.
  """
  if not (random_crop or random_flip):
    return x

  def one(image, key):
    k_crop, k_flip = jax.random.split(key)
    if random_crop:
      padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
      dy, dx = jax.random.randint(k_crop, (2,), 0, 2 * pad + 1)
      image = lax.dynamic_slice(padded, (dy, dx, 0), image.shape)
    if random_flip:
      image = jnp.where(jax.random.bernoulli(k_flip), image[:, ::-1], image)
    return image

  return jax.vmap(one)(x, keys)
