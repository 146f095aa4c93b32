"""Robust evaluation: clean accuracy, each attack, an attack suite, the per-example worst case,
and the sanity checks.

Every test example is counted exactly once (batches are padded and masked); accuracies are sums
of correct counts over the number of examples, never averages of batch averages. Each example's
attack randomness is a function of (seed, attack, example index), so results do not depend on the
batch size or the number of devices. Accuracy is always recomputed on the points the attack
returned, and each returned point is checked to lie in its eps-ball and in [0,1].

An evaluation attacks exactly the model it scores: the network in inference mode (BatchNorm with
its running statistics, `BN_MODE`), whatever `model.attack_bn_mode` says for the training
attack, so no example's result depends on the other examples of its batch or on padding.
"""

import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from robust_jax import attacks
from robust_jax import certify
from robust_jax import data as data_lib
from robust_jax import model_fns
from robust_jax import parallel
from robust_jax import rng
from robust_jax import run_io
from robust_jax import sanity
from robust_jax import suites
from robust_jax import version
from robust_jax.attacks import threat
from robust_jax.models import preprocessed

_SLACK = 1e-5  # relative float tolerance of the ball check
BN_MODE = 'eval'  # evaluations attack and score the inference-mode model


def make_eval_fn(model, attack_cfg, mesh):
  """Jitted `fn(params, batch_stats, images, labels, index, key) -> (correct, outside)`.

  `attack_cfg` None means clean accuracy. `index: int32[B]` is each example's test-set index.
  `correct: bool[B]` is computed on the returned points; `outside: bool[B]` flags returned points
  outside their eps-ball or [0,1].
  """
  spec = None if attack_cfg is None else attacks.validate(attack_cfg)
  attack = None if attack_cfg is None else attacks.build(attack_cfg, load_model=run_io.load_model)

  def per_device(params, batch_stats, images, labels, index, key):
    x = images.astype(jnp.float32) / 255.0
    x_adv = x
    if attack is not None:
      keys = rng.example_keys(key, rng.ATTACK, index)
      # A random model's draws during the attack: their own stream, per example (EOT averages
      # eot_samples of them per step); the final prediction below draws afresh.
      seen = model_fns.eot_logits_fn(model, params, batch_stats, BN_MODE,
                                     rng.example_keys(key, rng.MODEL_UNDER_ATTACK, index),
                                     spec['eot_samples'], bpda=spec['bpda'])
      x_adv = attack(seen, x, labels, keys)
    logits = model_fns.logits_fn(model, params, batch_stats, BN_MODE,
                                 keys=rng.example_keys(key, rng.MODEL, index))(x_adv)
    outside = (x_adv.reshape(x.shape[0], -1).min(1) < 0) | (x_adv.reshape(x.shape[0], -1).max(1)
                                                              > 1)
    if spec is not None:
      bound = spec['eps'] * (1 + _SLACK) + 1e-6
      outside = outside | (threat.distance(x_adv, x, spec['norm']) > bound)
    return jnp.argmax(logits, -1) == labels, outside

  mapped = parallel.per_device(
      per_device, mesh, in_specs=(P(), P(), P('data'), P('data'), P('data'), P()),
      out_specs=(P('data'), P('data')))
  return jax.jit(mapped)


def blank_state(n, dtypes):
  """{'done': bool[n], name: dtype[n], ...}, all zero: the per-example outputs of a phase."""
  return {'done': np.zeros(n, bool), **{k: np.zeros(n, d) for k, d in dtypes.items()}}


class Progress:
  """Per-batch evaluation results on disk, so a killed evaluation resumes where it stopped.

  One file per evaluation phase (`<dir>/<phase>.npz`: positions done, correct, outside), written
  atomically by process 0 after every batch. A file is used only when its fingerprint (the eval
  config, the seed, the phase's test indices and a checksum of the weights) matches, so changed
  weights or settings start the phase afresh. Batch results do not depend on which batches ran
  before (per-example attack keys), so a resumed evaluation gives the same numbers.
  """

  def __init__(self, directory, fingerprint):
    self.directory = directory
    self.fingerprint = fingerprint
    if jax.process_index() == 0:
      os.makedirs(directory, exist_ok=True)

  def _path(self, phase):
    return os.path.join(self.directory, phase.replace('/', '_') + '.npz')

  def load(self, phase, subset, dtypes):
    """(key, {'done': bool[n], name: dtype[n] for each of `dtypes`}) over the examples `subset`,
    from disk when the file's key (fingerprint and subset) matches, else all zero."""
    key = hashlib.sha256(self.fingerprint.encode() + np.asarray(subset).tobytes()).hexdigest()
    state = blank_state(len(subset), dtypes)
    try:
      with np.load(self._path(phase), allow_pickle=False) as f:
        if str(f['key']) == key and all(f[k].shape == v.shape and f[k].dtype == v.dtype
                                        for k, v in state.items()):
          state = {k: f[k].copy() for k in state}
    except (OSError, ValueError, KeyError):
      pass
    if jax.process_count() > 1:  # every process takes process 0's view (writable copies)
      state = {k: np.array(multihost_utils.broadcast_one_to_all(v)) for k, v in state.items()}
    return key, state

  def save(self, phase, key, state):
    if jax.process_index() != 0:
      return
    path = self._path(phase)
    with open(path + '.tmp', 'wb') as f:
      np.savez(f, key=np.asarray(key), **state)
    os.replace(path + '.tmp', path)


def fingerprint(config, params, batch_stats):
  """A digest of what an evaluation's per-example results depend on: the eval, model, defense
  and data configs, the seed, the library's source (so results saved by older code, e.g. before
  an attack fix, are never reused) and the weights."""
  h = hashlib.sha256()
  h.update(json.dumps({'eval': config.eval.to_dict(), 'seed': config.seed,
                       'model': config.model.to_dict(), 'defense': config.defense.to_dict(),
                       'data': config.data.to_dict(), 'source': version.source_digest()},
                      sort_keys=True, default=str).encode())
  for leaf in jax.tree.leaves((params, batch_stats)):
    h.update(np.ascontiguousarray(np.asarray(jax.device_get(leaf), np.float32)).tobytes())
  return h.hexdigest()


def _run(fn, params, batch_stats, images, labels, subset, batch_size, mesh, key, bar,
         store=None, phase=''):
  """Runs `fn` on the examples `subset` (test-set indices); returns (correct, outside) per one.

  With a `store` (Progress), batches finished by an earlier, killed run are read back, and each
  new batch is saved as soon as it is done.
  """
  host_rows = data_lib.host_slice(batch_size, jax.process_index(), jax.process_count())
  fields = {'correct': np.bool_, 'outside': np.bool_}
  file_key, state = (None, blank_state(len(subset), fields)) if store is None else store.load(
      phase, subset, fields)
  done, correct, outside = state['done'], state['correct'], state['outside']
  for start in range(0, len(subset), batch_size):
    idx = subset[start:start + batch_size]
    if done[start:start + len(idx)].all():
      if bar is not None:
        bar.update(len(idx))
      continue
    valid = len(idx)
    idx = np.concatenate([idx, np.zeros(batch_size - valid, idx.dtype)])  # pad; masked below
    batch = parallel.shard_batch({'x': images[idx][host_rows], 'y': labels[idx][host_rows],
                                  'i': idx.astype(np.int32)[host_rows]}, mesh)
    ok, out = fn(params, batch_stats, batch['x'], batch['y'], batch['i'], key)
    ok, out = (multihost_utils.process_allgather(a, tiled=True) for a in (ok, out))
    correct[start:start + valid] = np.asarray(ok)[:valid]
    outside[start:start + valid] = np.asarray(out)[:valid]
    done[start:start + valid] = True
    if store is not None:
      store.save(phase, file_key, state)
    if bar is not None:
      bar.update(valid)
  return correct.copy(), outside.copy()


def _eval_set(dataset, num_examples):
  n = len(dataset.test_labels)
  n = n if num_examples <= 0 else min(num_examples, n)
  return dataset.test_images[:n], dataset.test_labels[:n]


def _suite_cfgs(config):
  if not config.eval.suite:
    return []
  return suites.attacks(config.eval.suite, norm=config.eval.suite_norm, eps=config.eval.suite_eps)


def evaluate(model, params, batch_stats, dataset, config, mesh, progress=True,
             progress_dir=None):
  """Returns (results dict, artifacts dict) for `config.eval`.

  artifacts: the example images for the report's plots (when the sanity checks ran) and
  'per_example': {'clean', 'attack/<name>', 'suite', 'worst_case': bool[n]} per test example.

  progress_dir: where per-batch results are kept (see `Progress`); a rerun after a kill skips
  the batches already done. None: nothing is kept.

  results keys: num_examples, clean_accuracy, attacks {name: {accuracy, correct, metric, ...}},
  suite {name, accuracy, attacks: [...]}, worst_case_accuracy, worst_case_correct,
  sanity_checks [...], eps_curve, eval_seconds.
  """
  images, labels = _eval_set(dataset, config.eval.num_examples)
  n, bs = len(labels), config.eval.batch_size
  everyone = np.arange(n)
  named = [(k, dict(v)) for k, v in config.eval.attacks.items()]
  suite = _suite_cfgs(config)
  root = rng.root_key(config.seed, rng.EVAL)
  bar = tqdm.tqdm(total=n * (1 + len(named)), desc='eval', unit='img', dynamic_ncols=True,
                  disable=not progress or jax.process_index() != 0, mininterval=2.0)
  t_all = time.perf_counter()
  store = None
  if progress_dir:
    store = Progress(progress_dir, fingerprint(config, params, batch_stats))
  clean, _ = _run(make_eval_fn(model, None, mesh), params, batch_stats, images, labels,
                  everyone, bs, mesh, root, bar, store, 'clean')
  results = {'num_examples': n, 'clean_accuracy': float(clean.mean()), 'attacks': {}}
  correct, violations, checked = {}, 0, 0
  for a_i, (name, cfg) in enumerate(named):
    bar.set_description(f'eval {name}')
    t0 = time.perf_counter()
    ok, out = _run(make_eval_fn(model, cfg, mesh), params, batch_stats, images, labels,
                   everyone, bs, mesh, jax.random.fold_in(root, rng.EVAL_ATTACKS + a_i), bar, store,
                   f'attack-{name}')
    correct[name], violations, checked = ok, violations + int(out.sum()), checked + n
    results['attacks'][name] = {
        'accuracy': float(ok.mean()), 'correct': int(ok.sum()), 'metric': attacks.describe(cfg),
        'seconds': time.perf_counter() - t0, **attacks.validate(cfg, f'eval.attacks.{name}')}
  worst = np.logical_and.reduce([clean] + list(correct.values()))

  square, first = None, None
  if suite:
    robust = clean.copy()
    bar.total += int(clean.sum()) * len(suite)
    entries = []
    for s_i, (name, cfg) in enumerate(suite):
      bar.set_description(f'{config.eval.suite} {name}')
      t0 = time.perf_counter()
      todo = np.flatnonzero(robust)
      if name == 'square':
        white_box = robust.copy()
      ok, out = _run(make_eval_fn(model, cfg, mesh), params, batch_stats, images, labels,
                     todo, bs, mesh, jax.random.fold_in(root, rng.EVAL_SUITE + s_i), bar, store,
                     f'suite-{config.eval.suite}-{name}')
      violations, checked = violations + int(out.sum()), checked + len(todo)
      robust[todo] = ok
      if s_i == 0:  # the first attack saw every clean-correct point: exact per example
        first = (name, cfg, robust.copy())
      if name == 'square':
        square = (white_box, robust.copy())
      entries.append({'name': name, 'metric': attacks.describe(cfg), 'attacked': len(todo),
                      'broken': int((~ok).sum()), 'accuracy_after': float(robust.mean()),
                      'seconds': time.perf_counter() - t0, **attacks.validate(cfg)})
    results['suite'] = {'name': config.eval.suite, 'accuracy': float(robust.mean()),
                        'attacks': entries}
    worst &= robust
  results['worst_case_accuracy'] = float(worst.mean())
  results['worst_case_correct'] = int(worst.sum())
  bar.close()

  # Per-example outcomes (not written to results.json): what the counts above are sums of.
  per_example = {'clean': clean, **{f'attack/{k}': v for k, v in correct.items()},
                 'worst_case': worst}
  if suite:
    per_example['suite'] = robust
  artifacts = {}
  if config.eval.sanity_checks:
    results['sanity_checks'], results['eps_curve'], artifacts = _sanity(
        model, params, batch_stats, images, labels, config, named, suite, correct, square,
        (violations, checked), root, clean, first)
  if config.eval.get('certify') and config.eval.certify.examples > 0:
    results['certify'] = certify.run(model, params, batch_stats, dataset, config, mesh, progress)
  results['eval_seconds'] = time.perf_counter() - t_all
  return results, {**artifacts, 'per_example': per_example}


def _primary(named, first, correct, n):
  """(name, config, bool[n] robust per example) of the strongest iterative attack that ran on
  every example: a named attack or the suite's first one, by steps x restarts; or None."""
  candidates = [(k, c, correct[k]) for k, c in named if c['name'] != 'fgsm']
  if first is not None:
    candidates.append(first)
  if not candidates:
    return None
  best = max(candidates, key=lambda kc: kc[1].get('steps', 1) * kc[1].get('restarts', 1))
  assert len(best[2]) == n
  return best


def _sanity(model, params, batch_stats, images, labels, config, named, suite, correct, square,
            ball, root, clean, first):
  """Sanity checks on the first `eval.sanity_examples` points (single device)."""
  m = min(config.eval.sanity_examples, len(labels))
  x = images[:m].astype(np.float32) / 255.0
  y = labels[:m]
  bn = BN_MODE
  # The model as a naive attacker sees it: masked gradients show up in these checks.
  logits_fn = model_fns.logits_fn(model, params, batch_stats, bn)
  best = _primary(named, first, correct, len(labels))
  p_cfg = None if best is None else best[1]
  primary_fn = logits_fn
  if p_cfg is not None:  # the primary attack's own view (BPDA, EOT) for its re-runs
    p_spec = attacks.validate(p_cfg)
    primary_fn = model_fns.eot_logits_fn(model, params, batch_stats, bn,
                                         samples=p_spec['eot_samples'], bpda=p_spec['bpda'])
  primary = None if best is None else (p_cfg, best[2][:m])
  single = [(k, c) for k, c in named if c['name'] == 'fgsm']
  single_step = (attacks.describe(single[0][1]), correct[single[0][0]][:m]) if single else None
  specs = [attacks.validate(c) for _, c in named + list(suite)]
  eot = [f['eot_samples'] for f in specs]
  bpda = [f['bpda'] for f in specs]
  random_fn = None
  if model_fns.is_random(model):
    random_fn = lambda v, k: model_fns.logits_fn(  # noqa: E731
        model, params, batch_stats, bn, keys=jax.random.split(k, v.shape[0]))(v)
  threat_cfg = p_cfg or (named[0][1] if named else dict(norm='linf', eps=0.1))
  checks, curve = sanity.run_checks(
      logits_fn, x, y, norm=threat_cfg.get('norm', 'linf'), eps=threat_cfg['eps'],
      key=jax.random.fold_in(root, rng.EVAL_SANITY), primary=primary, single_step=single_step,
      square=square, violations=ball[0], checked_points=ball[1],
      random_logits_fn=random_fn, eot_samples=max(eot, default=1), primary_logits_fn=primary_fn,
      clean_correct=clean[:m], load_model=run_io.load_model)
  if preprocessed.is_preprocessed(model):
    t = model.transform
    checks.append((sanity.check_transform_attacked(
        t.name, t.differentiable, t.random, any(bpda), any(e > 1 for e in eot))))
  for c in checks:
    c['subset'] = m
  artifacts = {}
  if p_cfg is not None:
    k = min(8, m)
    keys = jax.random.split(jax.random.fold_in(root, rng.EVAL_SAMPLES), k)
    x_adv = np.asarray(attacks.build(p_cfg, load_model=run_io.load_model)(
        logits_fn, jnp.asarray(x[:k]), jnp.asarray(y[:k]), keys))
    artifacts = {'x': x[:k], 'x_adv': x_adv, 'y': y[:k], 'attack': attacks.describe(p_cfg),
                 'pred': np.asarray(jnp.argmax(logits_fn(jnp.asarray(x[:k])), -1)),
                 'pred_adv': np.asarray(jnp.argmax(logits_fn(jnp.asarray(x_adv)), -1))}
  return checks, curve, artifacts
