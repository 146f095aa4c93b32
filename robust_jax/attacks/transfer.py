"""Transfer attack: PGD on a surrogate model loaded from a robust_jax workdir, applied to the
target. It uses no gradient of the target, so it tests whether a defense's robustness survives
adversarial examples crafted elsewhere (a gradient-masked model is often weaker to them).

The config's `surrogate` is a workdir; `attacks.build` loads it with the `load_model` its caller
passes (robust_jax.run_io.load_model) and hands the loaded run to `make_transfer`.
"""

from robust_jax.attacks import pgd

DEFAULTS = dict(norm='linf', eps=0.0, steps=40, step_size=None, restarts=1, random_start=True,
                loss='ce', surrogate='')
RUN_FIELDS = ('surrogate',)  # fields naming a trained run's workdir: attacks.build loads them


def make_transfer(*, surrogate, norm='linf', eps, steps=40, step_size=None, restarts=1,
                  random_start=True, loss='ce'):
  """Builds `attack(logits_fn, x, y, key) -> x_adv`; `logits_fn` (the target) is not queried.

  Args:
    surrogate: the loaded surrogate run (run_io.Run: `surrogate.logits_fn()` is its
      inference-mode logits function).
    The other fields configure the PGD run on the surrogate (step_size None: 2.5 eps / steps).
  """
  if not surrogate:
    raise ValueError('transfer attack: set `surrogate` to the workdir of a trained model.')
  surrogate_fn = surrogate.logits_fn()
  base = pgd.make_pgd(norm=norm, eps=eps, steps=steps,
                      step_size=2.5 * eps / steps if step_size is None else step_size,
                      restarts=restarts, random_start=random_start, loss=loss, track_best=True)

  def attack(logits_fn, x, y, key):
    del logits_fn  # black box: only the surrogate is differentiated
    return base(surrogate_fn, x, y, key)

  return attack
