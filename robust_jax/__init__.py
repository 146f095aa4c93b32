"""robust_jax: adversarial robustness in JAX (attacks, defenses, trustworthy evaluation)."""

from robust_jax import xla_flags as _xla_flags

_xla_flags.apply()  # before any backend starts: XLA reads XLA_FLAGS once
