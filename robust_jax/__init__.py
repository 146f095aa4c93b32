"""robust_jax: adversarial robustness in JAX (attacks, defenses, trustworthy evaluation).

    import robust_jax
    results = robust_jax.evaluate(logits_fn, images, labels, norm='Linf', eps=8 / 255)

`robust_jax.evaluate` (robust_jax/eval/api.py) evaluates any JAX function from images to logits;
it is imported on first use, so `import robust_jax` stays light.
"""

from robust_jax import xla_flags as _xla_flags

_xla_flags.apply()  # before any backend starts: XLA reads XLA_FLAGS once


def __getattr__(name):
  if name == 'evaluate':
    from robust_jax.eval import api  # pylint: disable=g-import-not-at-top
    return api.evaluate
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
