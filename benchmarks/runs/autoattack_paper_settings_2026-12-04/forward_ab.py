"""small_cnn (random init) per-call times in ms, one code tree (PYTHONPATH): the jitted forward pass
at 64 and 256 rows, a Square query (square._search, iterations 1000-1100) at 64 and 256 rows and a
PGD-style gradient step (fori_loop of 40) at 256 rows; best of 5. Used for the A/B of
fast_ops.strided_conv (commands.sh)."""
import time, sys
import robust_jax
import jax, jax.numpy as jnp, numpy as np
from robust_jax.models.cnns import SmallCNN
from robust_jax.attacks import square
m = SmallCNN(num_classes=10, mean=(0.2860,), std=(0.3530,))
v = m.init(jax.random.key(0), jnp.zeros((1,28,28,1)), train=False)
lf = lambda xx: m.apply(v, xx, train=False)
def best(fn, reps=5):
  return min(fn() for _ in range(reps))
def fwd(B, n=100):
  x = jnp.asarray(np.random.rand(B,28,28,1).astype(np.float32)); f=jax.jit(lf); f(x).block_until_ready()
  def once():
    t=time.perf_counter()
    for _ in range(n): y=f(x)
    y.block_until_ready(); return (time.perf_counter()-t)/n*1e3
  return best(once)
def sq(B, n=100):
  x = jnp.asarray(np.random.rand(B,28,28,1).astype(np.float32)); y = jnp.zeros(B, jnp.int32)
  start, search = square._search('linf', 0.1, 5000, 0.8)
  keys = jax.random.split(jax.random.key(0), B)
  c0 = jax.jit(lambda x,y,k: start(lf, x, y, k))(x,y,keys)
  g = jax.jit(lambda x,y,k,c: search(lf, x, y, k, c, 1000, 1000+n)); jax.block_until_ready(g(x,y,keys,c0))
  def once():
    t=time.perf_counter(); jax.block_until_ready(g(x,y,keys,c0)); return (time.perf_counter()-t)/n*1e3
  return best(once)
def pgd(B, n=40):
  x = jnp.asarray(np.random.rand(B,28,28,1).astype(np.float32)); y = jnp.zeros(B, jnp.int32)
  loss = lambda xa: -jnp.sum(jax.nn.log_softmax(lf(xa))[jnp.arange(B), y])
  g = jax.jit(lambda x: jax.lax.fori_loop(0, n, lambda i, xa: jnp.clip(xa + 0.01*jnp.sign(jax.grad(loss)(xa)), 0, 1), x))
  g(x).block_until_ready()
  def once():
    t=time.perf_counter(); g(x).block_until_ready(); return (time.perf_counter()-t)/n*1e3
  return best(once)
print(sys.argv[1], 'fwd64 %.3f fwd256 %.3f sq64 %.3f sq256 %.3f pgd256 %.3f' % (fwd(64), fwd(256), sq(64), sq(256), pgd(256)), flush=True)
