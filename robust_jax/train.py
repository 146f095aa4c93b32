"""Deprecated: the training loop and step are in robust_jax/training/ (loop.py, step.py).

    from robust_jax.training import loop    # loop.fit(config, workdir, dataset, model, mesh)
"""

import warnings

from robust_jax.training import loop
from robust_jax.training import state
from robust_jax.training import step

warnings.warn('robust_jax.train is deprecated: use robust_jax.training.loop (fit, '
              'num_train_steps), .step (make_train_step) and .state (init_state, TrainState).',
              DeprecationWarning, stacklevel=2)

fit, FitResult, num_train_steps = loop.fit, loop.FitResult, loop.num_train_steps
make_train_step = step.make_train_step
TrainState, FreeTrainState, init_state = state.TrainState, state.FreeTrainState, state.init_state
