"""Randomised smoothing: Monte Carlo prediction and certified L2 radii (Cohen, Rosenfeld & Kolter
2019, "Certified adversarial robustness via randomized smoothing").

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), of a base
classifier f (the network trained behind the `gaussian_noise` transform) is robust within L2
radius sigma * Phi^-1(pA) around x when class cA has probability at least pA > 1/2 under noise.
Both procedures of the paper's pseudocode, per example:

  predict   n noisy votes; the top two counts nA >= nB; return cA if a two-sided binomial test of
            nA out of nA + nB at p = 1/2 rejects at level alpha, else abstain (-1). It returns a
            class other than g(x) with probability at most alpha.
  certify   cA = the top class of n0 selection votes; pA = the one-sided (1 - alpha)
            Clopper-Pearson lower bound on P(f = cA) from nA of n fresh votes; abstain if
            pA < 1/2, else radius sigma * Phi^-1(pA). With probability >= 1 - alpha over the
            noise, g is cA on the whole ball (when not abstaining).

    fn = lambda x: model.apply(variables, x, train=False)        # base classifier, f32[B,K]
    cert = certify.certify(fn, x, y, keys, sigma=0.25, n0=100, n=10_000, alpha=0.001)
    cert.prediction, cert.radius, cert.correct                   # int[B] (-1: abstain), ...

The votes are counted in JAX (jitted; the noise draws of example i come from its own key, chunk by
chunk in a `lax.fori_loop`, so results do not depend on the batch size or the device count); the
statistics run on the host with scipy. `run` does the whole thing for `config.eval.certify`, and
`table`/`plot` render its results (the certified accuracy against radius).
"""

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.sharding import PartitionSpec as P

from robust_jax import defenses
from robust_jax import errors
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import rng
from robust_jax.defenses import transforms
from robust_jax.eval import loop


def sample_counts(base_fn, x, keys, *, sigma, num, noise_batch):
  """int32[B,K]: votes of `base_fn` over `num` noisy copies x_i + sigma * N(0, I) of each example.

  base_fn: f32[M,H,W,C] -> f32[M,K]; x: f32[B,H,W,C]; keys: one PRNG key per example. Draw j of
  example i uses fold_in(keys[i], j); `noise_batch` draws per example go through the network at
  once (B * noise_batch images a forward pass).
  """
  b = x.shape[0]
  k = jax.eval_shape(base_fn, x[:1]).shape[-1]
  m = min(noise_batch, num)

  def body(chunk, counts):
    j = chunk * m + jnp.arange(m)

    def noisy(xi, ki):
      draw = lambda jj: xi + sigma * jax.random.normal(jax.random.fold_in(ki, jj), xi.shape)
      return jax.vmap(draw)(j)

    xs = jax.vmap(noisy)(x, keys).reshape((b * m,) + x.shape[1:])
    votes = jax.nn.one_hot(jnp.argmax(base_fn(xs), -1), k, dtype=jnp.int32).reshape(b, m, k)
    return counts + jnp.sum(votes * (j < num)[None, :, None], axis=1)

  return jax.lax.fori_loop(0, -(-num // m), body, jnp.zeros((b, k), jnp.int32))


def _stream(keys, stream):
  return jax.vmap(jax.random.fold_in, (0, None))(keys, stream)


def lower_confidence_bound(count, n, alpha):
  """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial p from `count` of `n`.

  The alpha quantile of Beta(count, n - count + 1) (0 when count = 0); Cohen et al.'s
  `proportion_confint(count, n, alpha=2 * alpha, method='beta')[0]`.
  """
  count = np.asarray(count, np.float64)
  n = np.asarray(n, np.float64)
  safe = np.maximum(count, 1.0)
  return np.where(count > 0, scipy.stats.beta.ppf(alpha, safe, n - count + 1.0), 0.0)


def binomial_p_value(n_a, n_b):
  """Two-sided binomial test of n_a successes in n_a + n_b trials at p = 1/2 (n_a >= n_b):
  P(|X - N/2| >= n_a - N/2) = min(1, 2 * P(X >= n_a)), X ~ Bin(N, 1/2)."""
  n_a = np.asarray(n_a, np.int64)
  total = n_a + np.asarray(n_b, np.int64)
  return np.minimum(1.0, 2.0 * scipy.stats.binom.sf(n_a - 1, total, 0.5))


def predict_from_counts(counts, alpha):
  """int[B]: Cohen et al.'s PREDICT from votes int[B,K]; -1 = abstain."""
  counts = np.asarray(counts)
  order = np.argsort(-counts, axis=-1, kind='stable')
  rows = np.arange(len(counts))
  n_a, n_b = counts[rows, order[:, 0]], counts[rows, order[:, 1]]
  return np.where(binomial_p_value(n_a, n_b) <= alpha, order[:, 0], -1)


def certify_from_counts(counts0, counts, sigma, alpha):
  """(prediction int[B] with -1 = abstain, radius f64[B] (0 when abstaining), pA f64[B]) from the
  selection votes counts0 and the estimation votes counts (both int[B,K])."""
  counts0, counts = np.asarray(counts0), np.asarray(counts)
  c_a = np.argmax(counts0, axis=-1)
  n_a = counts[np.arange(len(counts)), c_a]
  p_a = lower_confidence_bound(n_a, counts.sum(-1), alpha)
  abstain = p_a < 0.5
  radius = np.where(abstain, 0.0, sigma * scipy.stats.norm.ppf(np.maximum(p_a, 0.5)))
  return np.where(abstain, -1, c_a), radius, p_a


def predict(base_fn, x, keys, *, sigma, n, alpha, noise_batch=100):
  """Smoothed prediction int[B] (-1 = abstain) of x: f32[B,H,W,C]; one PRNG key per example."""
  count = jax.jit(sample_counts, static_argnums=0, static_argnames=('num', 'noise_batch'))
  counts = count(base_fn, x, keys, sigma=sigma, num=n, noise_batch=noise_batch)
  return predict_from_counts(np.asarray(counts), alpha)


class Certificate(NamedTuple):
  prediction: np.ndarray  # int[B], -1 = abstain
  radius: np.ndarray      # f64[B], certified L2 radius (0 when abstaining)
  correct: np.ndarray     # bool[B], prediction == label (False when abstaining)
  p_a: np.ndarray         # f64[B], the lower confidence bound on P(f(x + e) = prediction)


def certify(base_fn, x, y, keys, *, sigma, n0, n, alpha, noise_batch=100):
  """Cohen et al.'s CERTIFY of x: f32[B,H,W,C] with labels y: int[B]; returns a Certificate."""
  count = jax.jit(sample_counts, static_argnums=0, static_argnames=('num', 'noise_batch'))
  counts0 = count(base_fn, x, _stream(keys, rng.CERTIFY_SELECT), sigma=sigma, num=n0,
                  noise_batch=noise_batch)
  counts = count(base_fn, x, _stream(keys, rng.CERTIFY_ESTIMATE), sigma=sigma, num=n,
                 noise_batch=noise_batch)
  pred, radius, p_a = certify_from_counts(np.asarray(counts0), np.asarray(counts), sigma, alpha)
  return Certificate(pred, radius, pred == np.asarray(y), p_a)


def certified_accuracy(radius, correct, radii):
  """[fraction of examples that are correct with certified radius >= r, for r in radii]."""
  radius, correct = np.asarray(radius), np.asarray(correct, bool)
  return [float(np.mean(correct & (radius >= r))) for r in radii]


# --- config.eval.certify: validation, the run over the test set, its table and plot ---


def validate(config, num_devices=1):
  """ConfigError on a bad `config.eval.certify` field (nothing to check when it is off)."""
  c = config.eval.get('certify')
  if c is None or c.examples == 0:
    return
  for field in ('examples', 'n0', 'n', 'batch_size', 'noise_batch'):
    v = c[field]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise errors.ConfigError(f'eval.certify.{field}={v!r} must be an integer >= 1'
                               + (' (0 turns certification off).' if field == 'examples' else '.'))
  if not defenses.facets(config).certifiable:
    raise errors.ConfigError(
        f'eval.certify.examples={c.examples} needs defense.name=\'gaussian_noise\' (the base '
        f'classifier and sigma of randomised smoothing come from it), not '
        f'{config.defense.name!r}; set eval.certify.examples=0 to turn certification off.')
  if c.batch_size % num_devices:
    raise errors.ConfigError(f'eval.certify.batch_size={c.batch_size} is not divisible by the '
                             f'{num_devices} devices; use a multiple of {num_devices}.')
  if not isinstance(c.alpha, float) or not 0.0 < c.alpha < 0.5:
    raise errors.ConfigError(f'eval.certify.alpha={c.alpha!r} must be a float in (0, 0.5), e.g. '
                             '0.001 (Cohen et al.).')
  radii = tuple(c.radii) if isinstance(c.radii, (tuple, list)) else ()
  if not radii or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not r >= 0
                      for r in radii):
    raise errors.ConfigError(f'eval.certify.radii={radii!r} must be a non-empty tuple of L2 '
                             'radii >= 0.')


def _make_count_fn(model, sigma, c, mesh):
  """Jitted (params, batch_stats, images uint8[B,...], index int32[B], key) -> (counts0, counts)."""

  def per_device(params, batch_stats, images, index, key):
    v = model_fns.variables(params, batch_stats)
    base = lambda x: model.apply(v, x, train=False, method=transforms.Preprocessed.network)
    x = images.astype(jnp.float32) / 255.0
    keys = rng.example_keys(key, rng.CERTIFY_EXAMPLES, index)
    counts0 = sample_counts(base, x, _stream(keys, rng.CERTIFY_SELECT), sigma=sigma, num=c.n0,
                            noise_batch=c.noise_batch)
    counts = sample_counts(base, x, _stream(keys, rng.CERTIFY_ESTIMATE), sigma=sigma, num=c.n,
                           noise_batch=c.noise_batch)
    return counts0, counts

  return jax.jit(parallel.per_device(per_device, mesh,
                                     in_specs=(P(), P(), P('data'), P('data'), P()),
                                     out_specs=(P('data'), P('data'))))


def run(model, params, batch_stats, dataset, config, mesh, progress=True, store=None):
  """Certifies the first `eval.certify.examples` test images; returns results['certify'].

  store: a `loop.Progress` (its fingerprint covers `eval.certify` and the defense's sigma): the
  vote counts of batches certified by an earlier, killed run are read back, not recounted. None
  keeps nothing.
  """
  c = config.eval.certify
  sigma = float(transforms.fields(config)['sigma'])
  n = min(c.examples, len(dataset.test_labels))
  images, labels = dataset.test_images[:n], dataset.test_labels[:n]
  fn = _make_count_fn(model, sigma, c, mesh)
  key = jax.random.fold_in(rng.root_key(config.seed, rng.EVAL), rng.CERTIFY)
  t0 = time.perf_counter()
  bar = loop.progress_bar(n, f'certify (n={c.n})', progress)
  votes = (np.int32, (dataset.num_classes,))
  out = loop.run(lambda b: fn(params, batch_stats, b['x'], b['i'], key),
                 {'x': images, 'i': np.arange(n, dtype=np.int32)}, np.arange(n), c.batch_size,
                 {'counts0': votes, 'counts': votes}, mesh=mesh, bar=bar, store=store,
                 phase='certify')
  bar.close()
  counts0, counts = out['counts0'], out['counts']
  pred, radius, p_a = certify_from_counts(counts0, counts, sigma, c.alpha)
  correct = pred == labels
  smoothed = predict_from_counts(counts, c.alpha)
  radii = [float(r) for r in c.radii]
  return {
      'sigma': sigma, 'n0': c.n0, 'n': c.n, 'alpha': c.alpha, 'num_examples': n,
      'accuracy': float(correct.mean()), 'abstained': float(np.mean(pred < 0)),
      'predict_accuracy': float(np.mean(smoothed == labels)),
      'predict_abstained': float(np.mean(smoothed < 0)),
      'radii': radii, 'certified_accuracy': certified_accuracy(radius, correct, radii),
      'label': labels.tolist(), 'prediction': pred.tolist(), 'radius': radius.tolist(),
      'correct': correct.tolist(), 'p_a': p_a.tolist(), 'seconds': time.perf_counter() - t0}


def table(res):
  """Markdown: certified accuracy against L2 radius, with the procedure's parameters."""
  lines = [f'Randomised smoothing (Cohen et al. 2019), sigma = {res["sigma"]}, n0 = {res["n0"]}, '
           f'n = {res["n"]}, alpha = {res["alpha"]}, on the first {res["num_examples"]} test '
           f'images: CERTIFY is correct on {100 * res["accuracy"]:.2f}% and abstains on '
           f'{100 * res["abstained"]:.2f}%; PREDICT is correct on '
           f'{100 * res["predict_accuracy"]:.2f}% and abstains on '
           f'{100 * res["predict_abstained"]:.2f}%.', '',
           '| L2 radius | certified accuracy (%) |', '|---:|---:|']
  lines += [f'| {r:g} | {100 * a:.2f} |' for r, a in zip(res['radii'], res['certified_accuracy'])]
  return '\n'.join(lines)


def plot(res, workdir):
  """Writes certified_accuracy.png (certified accuracy against radius); returns {title: file}."""
  import os  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  radius = np.asarray(res['radius'])
  correct = np.asarray(res['prediction']) == np.asarray(res['label'])
  top = max(max(res['radii']), float(radius.max(initial=0.0))) * 1.05 or 1.0
  grid = np.linspace(0.0, top, 300)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(grid, [100 * a for a in certified_accuracy(radius, correct, grid)], '-')
  ax.plot(res['radii'], [100 * a for a in res['certified_accuracy']], 'o')
  ax.set_xlabel('L2 radius'), ax.set_ylabel('certified accuracy (%)'), ax.set_ylim(-2, 102)
  ax.set_title(f'randomised smoothing, sigma = {res["sigma"]}'), ax.grid(alpha=0.3)
  fig.tight_layout(), fig.savefig(os.path.join(workdir, 'certified_accuracy.png'), dpi=120)
  plt.close(fig)
  return {'certified accuracy against L2 radius': 'certified_accuracy.png'}


def render(results, title=None):
  """[the certified-accuracy table] when certification ran, else []."""
  del title
  return [table(results['certify'])] if 'certify' in results else []


def plots(results, artifacts, workdir):
  """`plot` of results['certify'] when certification ran; {title: file name}."""
  del artifacts
  return plot(results['certify'], workdir) if 'certify' in results else {}
