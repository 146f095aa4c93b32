"""Square Attack (Andriushchenko et al. 2020): score-based random search, forward passes only.

    attack = make_square(norm='linf', eps=8 / 255, steps=5000)
    x_adv = jax.jit(attack, static_argnums=0)(logits_fn, x, y, jax.random.key(0))

Each iteration proposes, per example, a change confined to one random square window (L-inf:
every channel of the window set to +-eps; L2: the window's perturbation replaced by a centred
+- pattern mixed with the old one, a second window's mass moved into it), queries the model once,
and keeps the proposal if it raises the margin max_{j != y} z_j - z_y. Examples already
misclassified stop changing (masked with `jnp.where`, shapes fixed). The window side follows the
paper's schedule: a fraction p of the image, p = p_init halved at iterations 10, 50, 200, 500,
1000, 2000, 4000, 6000 and 8000 of 10000, rescaled to `steps`. Restarts run vmapped and each
example keeps its highest margin. With one restart the queries run in stages (`make_square_staged`,
see stages.py), so an evaluation stops querying for the examples already misclassified.
"""

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.attacks import objectives
from robust_jax.attacks import pgd
from robust_jax.attacks import stages
from robust_jax.attacks import threat

DEFAULTS = {'square': dict(norm='linf', eps=0.0, steps=5000, restarts=1, p_init=0.8)}
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_TINY = 1e-12


def window_side(i, steps, p_init, height, width, norm):
  """Side of the square at iteration `i` (int32 scalar, traced) of `steps`.

  p halves when int(i / steps * 10000) first exceeds each threshold; the side is
  round(sqrt(p * H * W)), at least 1 (L-inf) or 3 and odd (L2), at most min(H, W).
  """
  starts = jnp.array([-(-(t + 1) * steps // 10000) for t in _HALVINGS], jnp.int32)
  p = p_init / 2.0 ** jnp.sum(i >= starts)
  side = jnp.round(jnp.sqrt(p * height * width)).astype(jnp.int32)
  limit = min(height, width)
  if norm == 'linf':
    return jnp.clip(side, 1, limit)
  side = jnp.maximum(side, 3)
  side = side + 1 - side % 2
  return jnp.minimum(side, limit - 1 + limit % 2)


def _window(key, height, width, side):
  """A side x side square at a uniformly random position: (bool[H,W] mask, int rows[H,1] and
  cols[1,W] relative to its corner)."""
  k_top, k_left = jax.random.split(key)
  top = jax.random.randint(k_top, (), 0, height - side + 1)
  left = jax.random.randint(k_left, (), 0, width - side + 1)
  rows = jnp.arange(height)[:, None] - top
  cols = jnp.arange(width)[None, :] - left
  return (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side), rows, cols


def _centred(a, b, side, inside, max_side):
  """The paper's L2 pattern on a side x side window, unit L2 norm: f32 like `a`.

  `a, b`: local row and column (int, broadcastable); `inside`: bool mask of the window; `side`
  (traced) is at most the static `max_side`. The top half holds concentric rectangles of weight
  sum_{k >= ring} 1/(k+1)^2, the bottom half the same with a minus sign; each half is normalised,
  then the whole.
  """
  half = side // 2
  top = a < half
  rows = jnp.where(top, half, side - half)
  a = jnp.where(top, a, a - half)
  ring = jnp.maximum(jnp.abs(a - rows // 2), jnp.abs(b - side // 2))
  partial = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, max_side + 2) ** 2)])
  partial = jnp.asarray(partial, jnp.float32)  # partial[n] = sum_{k=1..n} 1/k^2
  value = jnp.where(inside, partial[half + 1] - partial[jnp.clip(ring, 0, max_side)], 0.0)
  up = jnp.where(top, value, 0.0)
  down = jnp.where(top, 0.0, value)
  pattern = (up / jnp.maximum(jnp.sqrt(jnp.sum(up * up)), _TINY)
             - down / jnp.maximum(jnp.sqrt(jnp.sum(down * down)), _TINY))
  return pattern / jnp.maximum(jnp.sqrt(jnp.sum(pattern * pattern)), _TINY)


def _signs(key, shape):
  return jnp.where(jax.random.bernoulli(key, shape=shape), 1.0, -1.0)


def linf_init(key, x, eps):
  """Vertical stripes: each column and channel of `x: f32[H,W,C]` moved by +-eps."""
  return jnp.clip(x + eps * _signs(key, (1,) + x.shape[1:]), 0.0, 1.0)


def linf_propose(key, x, x_best, side, eps):
  """Sets the perturbation of one random window to +-eps per channel, f32[H,W,C] in [0,1]."""
  k_win, k_sign = jax.random.split(key)
  inside = _window(k_win, x.shape[0], x.shape[1], side)[0][..., None]
  return jnp.clip(jnp.where(inside, x + eps * _signs(k_sign, x.shape[2:]), x_best), 0.0, 1.0)


def l2_init(key, x, eps):
  """A grid of centred patterns of side H // 5 with random signs and orientations, scaled to eps."""
  height, width, channels = x.shape
  side = max(height // 5, 1)
  offset = (height - 5 * side) // 2
  cells = (height // side, width // side)
  local = np.arange(side)
  pattern = _centred(local[:, None], local[None, :], side, np.ones((side, side), bool), side)
  r, c = np.arange(height) - offset, np.arange(width) - offset  # static grid geometry
  covered = ((r >= 0) & (r // side < cells[0]))[:, None] & ((c >= 0) & (c // side < cells[1]))
  cell = np.clip(r // side, 0, cells[0] - 1)[:, None] * cells[1] + np.clip(c // side, 0,
                                                                            cells[1] - 1)
  a, b = np.broadcast_arrays((r % side)[:, None], (c % side)[None, :])
  k_sign, k_flip = jax.random.split(key)
  signs = _signs(k_sign, (cells[0] * cells[1], channels))[cell]  # [H,W,C]
  flip = jax.random.bernoulli(k_flip, shape=(cells[0] * cells[1],))[cell]
  value = jnp.where(flip, pattern[b, a], pattern[a, b])
  delta = jnp.where(covered[..., None], value[..., None] * signs, 0.0)
  return jnp.clip(x + eps * delta / jnp.maximum(jnp.linalg.norm(delta), _TINY), 0.0, 1.0)


def l2_propose(key, x, x_best, side, eps):
  """Moves the perturbation mass of two random windows into the first, re-shaped towards a random
  centred pattern, then rescales the whole perturbation to L2 norm eps: f32[H,W,C] in [0,1]."""
  height, width, channels = x.shape
  k_win, k_win2, k_sign, k_flip = jax.random.split(key, 4)
  inside, rows, cols = _window(k_win, height, width, side)
  inside2 = _window(k_win2, height, width, side)[0]
  flip = jax.random.bernoulli(k_flip)
  pattern = _centred(jnp.where(flip, cols, rows), jnp.where(flip, rows, cols), side, inside,
                     max(height, width))
  delta = x_best - x
  sq = jnp.square(delta)
  per_channel = lambda mask, v: jnp.sqrt(jnp.sum(jnp.where(mask[..., None], v, 0.0), (0, 1)))
  old = jnp.where(inside[..., None], delta / (per_channel(inside, sq) + _TINY), 0.0)
  new = pattern[..., None] * _signs(k_sign, (channels,)) + old
  budget = (jnp.maximum(eps ** 2 - jnp.sum(sq), 0.0) / channels
            + jnp.square(per_channel(inside | inside2, sq)))
  new = new / jnp.maximum(per_channel(inside, new * new), _TINY) * jnp.sqrt(budget)
  delta = jnp.where(inside[..., None], new, jnp.where(inside2[..., None], 0.0, delta))
  return jnp.clip(x + eps * delta / jnp.maximum(jnp.linalg.norm(delta), _TINY), 0.0, 1.0)


_SEARCH = {'linf': (linf_init, linf_propose), 'l2': (l2_init, l2_propose)}


def _search(norm, eps, steps, p_init):
  """(start, search): `start(logits_fn, x, y, run_keys) -> (x_best, margin)` and
  `search(logits_fn, x, y, run_keys, carry, lo, hi) -> carry` running iterations [lo, hi)."""
  if norm not in _SEARCH:
    raise ValueError(f'Unknown norm {norm!r}; valid: {threat.NORMS}.')
  init, propose = _SEARCH[norm]
  init = jax.vmap(init, in_axes=(0, 0, None))
  propose = jax.vmap(propose, in_axes=(0, 0, 0, None, None))

  def margin_fn(logits_fn, x, y):
    onehot = jax.nn.one_hot(y, jax.eval_shape(logits_fn, x).shape[-1], dtype=jnp.float32)
    return lambda xa: objectives.margin(logits_fn(xa), onehot)

  def start(logits_fn, x, y, run_keys):
    init_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(run_keys, steps)
    x_best = init(init_keys, x, eps)
    return x_best, margin_fn(logits_fn, x, y)(x_best)

  def search(logits_fn, x, y, run_keys, carry, lo, hi):
    height, width = x.shape[1:3]
    margin = margin_fn(logits_fn, x, y)

    def body(i, carry):
      x_best, best = carry
      side = window_side(i, steps, p_init, height, width, norm)
      step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(run_keys, i)
      x_new = propose(step_keys, x, x_best, side, eps)
      value = margin(x_new)
      take = (best <= 0) & (value > best)
      return jnp.where(take[:, None, None, None], x_new, x_best), jnp.where(take, value, best)

    return jax.lax.fori_loop(lo, hi, body, carry)

  return start, search


def make_square_run(*, norm='linf', eps, steps=5000, p_init=0.8):
  """One restart of `make_square` (same arguments, less `restarts`).

  Returns:
    run(logits_fn, x, y, run_keys) -> (x_adv, margin): `run_keys` one PRNG key per example ([B],
    e.g. a row of `pgd.restart_keys`); x_adv: f32[B,H,W,C] the run's best point and margin: f32[B]
    its margin. `make_square(restarts=R)` keeps, per example, the run of highest margin among
    `run(..., pgd.restart_keys(keys, R)[r])`.
  """
  start, search = _search(norm, eps, steps, p_init)

  def run(logits_fn, x, y, run_keys):
    return search(logits_fn, x, y, run_keys, start(logits_fn, x, y, run_keys), 0, steps)

  return run


def stage_bounds(steps):
  """Iterations where Square's stages begin and end, [0, ..., steps]: the schedule's early
  halvings (rescaled to `steps`; most points that fall, fall there) and every tenth of the run."""
  halvings = [-(-(t + 1) * steps // 10000) for t in _HALVINGS]
  tenths = [steps * j // 10 for j in range(1, 10)]
  return sorted({0, steps, *(b for b in halvings if 0 < b < steps // 10),
                 *(b for b in tenths if 0 < b)})


def make_square_staged(*, norm='linf', eps, steps=5000, p_init=0.8):
  """`make_square(restarts=1)` as a `stages.Staged`: stage s runs the iterations
  [stage_bounds(steps)[s], stage_bounds(steps)[s + 1]); the carry is the best point and its
  margin; an example is done once its margin is > 0 (misclassified: it no longer changes)."""
  start, search = _search(norm, eps, steps, p_init)
  bounds = stage_bounds(steps)
  run_keys = lambda keys: pgd.restart_keys(keys, 1)[0]

  def stage(logits_fn, x, y, keys, carry, s):
    edges = jnp.asarray(bounds, jnp.int32)
    return search(logits_fn, x, y, run_keys(keys), carry, edges[s], edges[s + 1])

  return stages.Staged(
      lambda _: len(bounds) - 1,
      lambda logits_fn, x, y, keys: start(logits_fn, x, y, run_keys(keys)), stage,
      lambda carry: carry[1] > 0, lambda logits_fn, x, y, keys, carry: carry[0])


def make_square(*, norm='linf', eps, steps=5000, restarts=1, p_init=0.8):
  """Builds `attack(logits_fn, x, y, key) -> x_adv` for the Square Attack.

  Args:
    norm: 'linf' or 'l2'.
    eps: radius of the threat model, in [0,1] pixel scale.
    steps: iterations, one forward pass each (plus one for the start), per restart.
    restarts: independent runs, vmapped; each example keeps its highest margin (run r of example
      b is `make_square_run` with key `pgd.restart_keys(keys, restarts)[r, b]`).
    p_init: initial fraction of the image covered by a square (0.8 for L-inf in the paper).

  Returns:
    attack(logits_fn, x, y, key): `logits_fn` maps f32[B,H,W,C] in [0,1] to f32[B,K] logits (only
    called forward), `x: f32[B,H,W,C]` in [0,1], `y: int[B]`, `key` one PRNG key or one per example
    ([B]). Returns f32[B,H,W,C] inside the ball around x and inside [0,1], gradients stopped.
  """
  if restarts == 1:
    return stages.as_attack(make_square_staged(norm=norm, eps=eps, steps=steps, p_init=p_init))
  run = make_square_run(norm=norm, eps=eps, steps=steps, p_init=p_init)

  def attack(logits_fn, x, y, key):
    keys = pgd.restart_keys(pgd.per_example_keys(key, x.shape[0]), restarts)  # [R,B]
    xs, values = jax.vmap(lambda k: run(logits_fn, x, y, k))(keys)
    x_adv = jnp.take_along_axis(xs, jnp.argmax(values, 0)[None, :, None, None, None], 0)[0]
    return jax.lax.stop_gradient(x_adv)

  return attack
