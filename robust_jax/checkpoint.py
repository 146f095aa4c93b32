"""Deprecated: checkpoints are in robust_jax/training/checkpoint.py (the run's one checkpointer).

    from robust_jax.training import checkpoint
    state, step = checkpoint.load(workdir, template)
"""

import warnings

from robust_jax.training import checkpoint as _checkpoint

warnings.warn('robust_jax.checkpoint is deprecated: use robust_jax.training.checkpoint.',
              DeprecationWarning, stacklevel=2)

load = _checkpoint.load
CheckpointMismatchError = _checkpoint.CheckpointMismatchError
