"""Training: the pure step, the resumable loop, its metrics, the overfitting monitor and the one
checkpointer.

    from robust_jax.training import loop
    result = loop.fit(config, workdir, dataset, model, mesh)   # FitResult(state, monitor, ...)

Modules, from the bottom up:

    optim.py       optax optimizer and learning-rate schedule from `config.optim`
    state.py       TrainState (FreeTrainState: free AT's carry), init_state, checkpoint items
    checkpoint.py  the run's one checkpointer: named items 'state', 'carry' and 'best' by step;
                   `load` for a trained run's weights
    metrics.py     step metrics checked for divergence -> metrics.jsonl and TensorBoard
    monitor.py     catastrophic-overfitting monitor (held-out PGD accuracy every epoch)
    step.py        make_train_step: per device under shard_map, gradients averaged with pmean
    loop.py        fit: restore, steps, logging, checkpoints, the monitor's decisions

This file imports none of them: loading a run (run_io.py) needs only optim, state and
checkpoint, and the loop imports the evaluation (through the monitor), which imports run_io.
"""
