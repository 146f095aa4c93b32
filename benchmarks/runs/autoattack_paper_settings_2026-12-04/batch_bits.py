"""Are small_cnn's logits and input gradients for the same 64 images bitwise equal whatever the
batch they run in (1 to 512 rows)? Prints one line per batch size (random init, this tree)."""

import jax
import jax.numpy as jnp
import numpy as np

import robust_jax  # noqa: F401  (applies robust_jax's XLA:CPU flags before JAX starts)
from robust_jax.models.cnns import SmallCNN

MODEL = SmallCNN(num_classes=10, mean=(0.2860,), std=(0.3530,))
VARIABLES = MODEL.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)


def main():
  logits = jax.jit(lambda x: MODEL.apply(VARIABLES, x, train=False))
  grads = jax.jit(jax.grad(lambda x: jnp.sum(MODEL.apply(VARIABLES, x, train=False)[:, 3])))
  x = np.random.RandomState(0).rand(512, 28, 28, 1).astype(np.float32)
  ref, ref_g = np.asarray(logits(x[:64])), np.asarray(grads(x[:64]))
  for b in (1, 8, 32, 64, 96, 128, 192, 256, 320, 384, 448, 500, 512):
    n = min(b, 64)
    got, got_g = np.asarray(logits(x[:b]))[:n], np.asarray(grads(x[:b]))[:n]
    diff = np.abs(got - ref[:n]).max()
    print(f'{b} rows: logits equal {np.array_equal(got, ref[:n])}, input gradients equal '
          f'{np.array_equal(got_g, ref_g[:n])}, max |logits diff| {diff:.2e}')


if __name__ == '__main__':
  main()
