"""`robust_jax.evaluate`: the robust evaluation of any JAX function from images to logits, on the
arrays you pass, with the same loop, attacks, suite, worst case and sanity checks as
`launch.py --mode=eval`, and the same results.

    import robust_jax
    logits_fn = lambda x: model.apply(variables, x, train=False)   # flax linen (inference mode)
    results = robust_jax.evaluate(logits_fn, x_test, y_test, norm='Linf', eps=8 / 255)
    results['clean_accuracy'], results['suite']['accuracy'], results['worst_case_accuracy']
    results['per_example']['worst_case']      # bool[n]: robust to every attack that ran

`logits_fn(x)` takes f32[B,H,W,C] in [0,1] (NHWC) and returns f32[B,num_classes] logits (not
probabilities); it is any JAX function: a closure over the weights of a flax linen or NNX model,
a haiku or equinox model, or plain jax.numpy. It must be the model in inference mode (BatchNorm
with its running statistics, no dropout), so each example's logits do not depend on the rest of
its batch. Put any input normalisation inside it: eps is measured on the [0,1] pixel scale.
Weights closed over become constants of every compiled program; for a large model, pass them as
`params` and take them as the first argument, `logits_fn(params, x)`: they are then placed on
every device once.

The evaluation is data-parallel over the local devices (the 'data' mesh axis of the evaluation
loop, robust_jax/eval/loop.py): clean accuracy, each attack of `attacks`, the `suite` (AutoAttack's
'standard' by default, as a cascade) and the per-example worst case over all of them, then the
sanity checks (robust_jax/eval/sanity.py). Every figure is an exact count over the examples
(`correct`, `clean_correct`, `worst_case_correct`), every attack's entry carries its norm and eps,
and `threat_model` names the one threat model of the whole evaluation. With `workdir`, the
results.json, report.md and plots are written there as `--mode=eval` writes them, with
per_example.npz beside them, and each finished batch is kept in WORKDIR/eval_progress: run again
after a kill, the evaluation resumes (see `fingerprint` for what must match).

A randomised defense is a function of a PRNG key too: pass `random=True` and write
`logits_fn(x, key)`. Each example then draws with its own key, the suite defaults to AutoAttack's
'rand' version (APGD-CE and APGD-DLR with EOT) and the sanity checks test the randomness:

    def noisy(x, key):                     # e.g. Gaussian noise on the input
      return net(x + 0.03 * jax.random.normal(key, x.shape))
    results = robust_jax.evaluate(noisy, x_test, y_test, random=True, eps=8 / 255)
"""

import hashlib
import json
import math
import os
import shutil
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import attacks as attacks_lib
from robust_jax import data as data_lib
from robust_jax import parallel
from robust_jax import report
from robust_jax import suites
from robust_jax import version
from robust_jax.eval import batch_fns
from robust_jax.eval import loop
from robust_jax.eval import robust
from robust_jax.eval import target as target_lib

NORMS = {'linf': 'linf', 'l2': 'l2'}  # accepted spellings, case-insensitive ('Linf', 'L2')


DEFAULT_SUITE = 'default'  # 'standard', or 'rand' for a random logits_fn


def evaluate(logits_fn, images, labels, *, norm='Linf', eps=8 / 255, suite=DEFAULT_SUITE,
             attacks=None, num_examples=None, batch_size=500, sanity_checks=True,
             sanity_examples=500, seed=0, params=None, random=False, workdir=None, resume=True,
             title=None, devices=None, verbose=True):
  """Evaluates `logits_fn` on (images, labels); returns the results dict of `--mode=eval`.

  Args:
    logits_fn: `x: f32[B,H,W,C] in [0,1] -> f32[B,K]` logits, a JAX function in inference mode
      (see the module docstring); `logits_fn(params, x)` when `params` is given.
    images: [N,H,W,C] (NHWC) floats in [0,1], or uint8 in 0..255; numpy or jax.
    labels: int[N] class indices.
    norm: the threat model, 'Linf' or 'L2' (any case).
    eps: the radius of the threat model on the [0,1] pixel scale (e.g. 8/255).
    suite: an attack suite run as a cascade: 'standard' (AutoAttack: APGD-CE, APGD-T, FAB-T,
      Square), 'apgd', 'rand' (EOT), 'quick', or None/'' for none. Default: 'standard', and
      'rand' (AutoAttack's version for randomised defenses) when `random`.
    attacks: {name: attack config} run on every example before the suite, e.g.
      {'pgd20': dict(name='pgd', steps=20)}; their norm and eps default to (and must equal)
      `norm` and `eps`. See robust_jax.attacks for the attacks and their fields.
    num_examples: evaluate the first `num_examples` of them (None: all).
    batch_size: examples per step over all devices (rounded up to a multiple of their number);
      results do not depend on it.
    sanity_checks: run the gradient-masking and consistency checks.
    sanity_examples: on the first this many examples (most checks).
    seed: of the attacks' randomness (each example's is a function of seed, attack and index).
    params: a pytree of weights that `logits_fn(params, x)` takes, or None.
    random: `logits_fn` is random (a randomised defense) and takes a PRNG key last:
      `logits_fn(x, key)` or `logits_fn(params, x, key)`. Each example then draws with its own
      key (the function is vmapped over single examples), attacks that ask for EOT average
      draws, and the sanity checks test the randomness.
    workdir: a directory to write results.json, report.md, the plots and per_example.npz into;
      each finished batch is also kept in WORKDIR/eval_progress, so that a killed evaluation
      run again with the same arguments resumes where it stopped.
    resume: with `workdir`, reuse the batches kept there. They are reused only when the
      settings, the images and labels, robust_jax's source, `params` and the logits of the
      function on the first images all match (a closure's weights are seen through those
      logits); False starts afresh.
    title: the report's title (default: the function's name and the number of examples).
    devices: the devices to evaluate on (default: all).
    verbose: show a progress bar and print the report.
  Returns:
    The results.json dict (num_examples, threat_model, clean_accuracy, clean_correct, attacks,
    suite, worst_case_accuracy, worst_case_correct, sanity_checks, eps_curve, test_split,
    config, code and machine), plus 'per_example': {'clean', 'attack/<name>', 'suite',
    'worst_case': bool[n]} (not written to results.json).
  Raises:
    ValueError (robust_jax.errors.ConfigError for settings) naming the problem and the fix.
  """
  if not isinstance(random, bool):
    raise ValueError(f'random={random!r} must be True or False.')
  if suite == DEFAULT_SUITE:
    suite = 'rand' if random else 'standard'
  norm, eps, suite = _threat(norm, eps, suite)
  x, y = check_arrays(images, labels)
  given = len(y)
  n = _num_examples(num_examples, given)
  x, y = x[:n], y[:n]
  named = _attacks(attacks, norm, eps)
  mesh = parallel.make_mesh(devices)
  batch = _batch_size(batch_size, n, mesh.devices.size)
  tgt = target_lib.of_function(logits_fn, params, random=random)
  num_classes = check_logits_fn(tgt, batch // mesh.devices.size, x.shape[1:])
  if int(y.max()) >= num_classes:
    raise ValueError(f'labels: label {int(y.max())} is outside the model\'s {num_classes} '
                     f'classes [0, {num_classes}) (logits_fn returns {num_classes} logits).')
  config = _config(seed, named, suite, norm, eps, n, batch, sanity_checks, sanity_examples)
  store = None
  if workdir and resume:
    store = loop.Progress(os.path.join(workdir, 'eval_progress'),
                          fingerprint(tgt, x, y, config))
  elif workdir and jax.process_index() == 0:
    shutil.rmtree(os.path.join(workdir, 'eval_progress'), ignore_errors=True)
  if params is not None:
    tgt = tgt._replace(variables=parallel.replicate(params, mesh))
  t0 = time.perf_counter()
  results, artifacts = robust.evaluate_target(tgt, x, y, config, mesh, progress=verbose,
                                              store=store)
  results['eval_seconds'] = time.perf_counter() - t0
  per_example = artifacts['per_example']
  results['threat_model'] = {'norm': norm, 'eps': eps}  # the counts: robust.evaluate_target
  results.update(test_split=data_lib.test_split(n, given), config=_as_dict(config),
                 **report.provenance())
  title = title or f'{_name(logits_fn)} on {n:,} images ({norm}, eps={eps:g})'
  text = None
  if workdir:
    text = report.write(workdir, results, artifacts, title)
    if jax.process_index() == 0:
      np.savez(os.path.join(workdir, 'per_example.npz'),
               **{k.replace('/', '_'): v for k, v in per_example.items()})
  if verbose:
    print('\n' + (text or report.full_report(results, title, console=True)) + '\n', flush=True)
  return {**results, 'per_example': per_example}


PROBE_IMAGES = 8  # the function's logits on this many images go into the store's fingerprint


def fingerprint(tgt, x, y, config):
  """A digest of what the per-example results of evaluating `tgt` on (x, y) depend on: the
  settings, robust_jax's source (results of older code are never reused), the images and labels,
  the weights passed as `params`, and the function itself through its logits on the first
  images (fixed keys for a random one), which change with a closure's weights."""
  h = hashlib.sha256()
  h.update(json.dumps({'config': _as_dict(config), 'random': tgt.random,
                       'source': version.source_digest(), 'images': [x.shape, str(x.dtype)]},
                      sort_keys=True, default=str).encode())
  h.update(np.ascontiguousarray(x).tobytes())
  h.update(np.ascontiguousarray(y).tobytes())
  for leaf in jax.tree.leaves(tgt.variables):
    if jnp.issubdtype(getattr(leaf, 'dtype', None), jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)  # e.g. an NNX state's RNG keys
    a = np.asarray(jax.device_get(leaf))
    h.update(str(a.dtype).encode() + np.ascontiguousarray(a).tobytes())
  probe = jnp.asarray(batch_fns.unit_images(x[:PROBE_IMAGES]))
  logits = jax.jit(lambda v, p: tgt.apply(v)(p))(tgt.variables, probe)  # weights as arguments
  h.update(np.asarray(logits, np.float32).tobytes())
  return h.hexdigest()


def _name(fn):
  name = getattr(fn, '__name__', type(fn).__name__)
  return 'logits_fn' if name == '<lambda>' else name


def _config(seed, named, suite, norm, eps, n, batch, sanity_checks, sanity_examples):
  """The `config` (seed and eval fields) that robust.evaluate_target reads."""
  ev = types.SimpleNamespace(
      num_examples=n, batch_size=batch, suite=suite, suite_norm=norm, suite_eps=eps,
      sanity_checks=bool(sanity_checks), sanity_examples=int(sanity_examples), attacks=named)
  return types.SimpleNamespace(seed=int(seed), eval=ev)


def _as_dict(config):
  return {'seed': config.seed, 'eval': dict(vars(config.eval))}


# --- Input checks: each error names the problem and the fix ---


def _threat(norm, eps, suite):
  """(norm, eps, suite) checked and in robust_jax's spelling ('linf', float, '' for none)."""
  key = norm.lower() if isinstance(norm, str) else norm
  if key not in NORMS:
    raise ValueError(f'norm={norm!r} is not supported; valid: \'Linf\' or \'L2\'.')
  norm = NORMS[key]
  if isinstance(eps, bool) or not isinstance(eps, (int, float, np.number)) or not (
      math.isfinite(eps) and eps > 0):
    raise ValueError(f'eps={eps!r} must be a finite number > 0 on the [0,1] pixel scale '
                     '(e.g. 8/255 for Linf, 0.5 for L2).')
  if norm == 'linf' and eps >= 1:
    raise ValueError(f'eps={eps!r} with norm Linf covers the whole [0,1] pixel range: eps is on '
                     f'the [0,1] scale (for {eps:g}/255 write eps={eps:g}/255).')
  suite = suite or ''
  if suite and suite not in suites.SUITES:
    raise ValueError(f'suite={suite!r}; valid: {list(suites.SUITES)} or None for none.')
  return norm, float(eps), suite


def check_arrays(images, labels):
  """(images, labels) as numpy: f32 in [0,1] (or uint8) [N,H,W,C] and int32[N]; ValueError for
  anything else, naming the fix."""
  x, y = np.asarray(images), np.asarray(labels)
  if x.ndim != 4:
    hint = ' (add the channel axis: images[..., None])' if x.ndim == 3 else ''
    raise ValueError(f'images must be [N,H,W,C] (NHWC); got shape {x.shape}{hint}.')
  if x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
    raise ValueError(f'images of shape {x.shape} look channels-first (NCHW, as PyTorch); pass '
                     'NHWC: images.transpose(0, 2, 3, 1).')
  if x.dtype != np.uint8:
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f'images must be floats in [0,1] (or uint8 in 0..255); got {x.dtype}.')
    x = x.astype(np.float32)
    lo, hi = float(x.min(initial=0)), float(x.max(initial=0))
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 1):
      raise ValueError(f'images must lie in [0,1] (eps is measured there); got values in '
                       f'[{lo:g}, {hi:g}]. Divide 0..255 images by 255, and move any '
                       'normalisation ((x - mean) / std) inside logits_fn.')
  if y.ndim == 2 and y.shape[0] == x.shape[0]:
    raise ValueError(f'labels must be class indices int[N]; got shape {y.shape} (one-hot? pass '
                     'labels.argmax(-1)).')
  if y.shape != (x.shape[0],):
    raise ValueError(f'labels must be int[N] with N={x.shape[0]} (one per image); got shape '
                     f'{y.shape}.')
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'labels must be integer class indices; got {y.dtype} (labels.astype(int)).')
  if len(y) == 0:
    raise ValueError('images and labels are empty: nothing to evaluate.')
  if int(y.min()) < 0:
    raise ValueError(f'labels must be class indices >= 0; got {int(y.min())}.')
  return x, y.astype(np.int32)


def _num_examples(num_examples, n):
  if num_examples is None:
    return n
  if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) or not (
      1 <= num_examples <= n):
    raise ValueError(f'num_examples={num_examples!r} must be an integer in [1, {n}] (the number '
                     'of images given), or None for all.')
  return int(num_examples)


def _batch_size(batch_size, n, devices):
  """`batch_size` rounded up to a multiple of `devices`, and no larger than `n` needs."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
      batch_size < 1):
    raise ValueError(f'batch_size={batch_size!r} must be an integer >= 1.')
  def up(b):
    return -(-int(b) // devices) * devices
  return min(up(batch_size), up(n))


def _attacks(attacks, norm, eps):
  """{name: attack config dict} with the evaluation's norm and eps; ConfigError when invalid."""
  if attacks is None:
    return {}
  if not isinstance(attacks, dict):
    raise ValueError(f'attacks must be a dict {{name: attack config}}, e.g. '
                     f'{{"pgd20": dict(name="pgd", steps=20)}}; got {type(attacks).__name__}.')
  out = {}
  for name, cfg in attacks.items():
    cfg = dict(cfg)
    own = cfg.get('norm', norm)
    own = NORMS.get(own.lower(), own) if isinstance(own, str) else own
    if own != norm or float(cfg.get('eps', eps)) != eps:
      raise ValueError(
          f'attacks[{name!r}] has norm={cfg.get("norm")!r}, eps={cfg.get("eps")!r} but the '
          f'evaluation\'s threat model is norm={norm!r}, eps={eps:g}: the worst case is over one '
          'threat model; drop the attack\'s norm/eps, or evaluate the other one separately.')
    cfg.update(norm=norm, eps=eps)
    attacks_lib.validate(cfg, f'attacks[{name!r}]')
    out[str(name)] = cfg
  return out


def check_logits_fn(tgt, batch, image_shape):
  """The number of classes of `tgt`'s logits on f32[batch, *image_shape]; ValueError when it
  cannot take them or does not return f[batch, num_classes] logits."""
  shape = (batch, *image_shape)
  try:
    out = jax.eval_shape(tgt.apply(tgt.variables), jax.ShapeDtypeStruct(shape, jnp.float32))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'logits_fn cannot take images f32{list(shape)} (NHWC, in [0,1]): {type(e).__name__}: '
        f'{str(e)[:400]}. It must be a JAX function of a JAX array (traceable by jax.jit), '
        'logits_fn(x), or logits_fn(params, x) with params=...; with random=True it takes a '
        'PRNG key last: logits_fn(x, key) or logits_fn(params, x, key).') from e
  if not hasattr(out, 'shape') or not hasattr(out, 'dtype'):
    raise ValueError(f'logits_fn must return one array of logits f32[B, num_classes]; got '
                     f'{type(out).__name__} (e.g. a flax apply with mutable=... returns '
                     '(logits, state): return the logits only).')
  if len(out.shape) != 2 or out.shape[0] != batch or out.shape[1] < 2:
    raise ValueError(f'logits_fn must return logits f[B, num_classes] (B={batch} images in, '
                     f'at least 2 classes); got shape {tuple(out.shape)} for input {list(shape)}.')
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f'logits_fn must return float logits; got {out.dtype}.')
  return int(out.shape[1])
