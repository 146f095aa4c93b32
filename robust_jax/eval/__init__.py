"""Evaluation: every evaluator runs its batches through one loop and renders its own report.

  loop.py       the batch loop, written once: pad the last batch, shard over devices and hosts,
                gather, progress bar, the resumable per-batch store (WORKDIR/eval_progress)
  target.py     the model evaluated: a robust_jax flax model with its weights, or any JAX
                function from images to logits
  robust.py     robust accuracy: clean, each attack, an attack suite, the per-example worst case
  api.py        robust_jax.evaluate: robust.py's evaluation of any JAX logits function on the
                user's arrays, returning and writing what --mode=eval does
  sanity.py     the gradient-masking and consistency checks (Athalye et al. 2018)
  detection.py  robust accuracy with a detector in the loop (abstention); the feature-squeezing
                detector itself is its defense's (robust_jax/defenses/squeezing.py)
  certify.py    randomised-smoothing prediction and certification (Cohen et al. 2019)

The training loop's catastrophic-overfitting monitor (training/monitor.py) runs its held-out
batches through the same loop. Each evaluator returns its results (a dict that goes into
results.json) and renders them: `render(results, title) -> [Markdown section, ...]` and, where it
draws, `plots(results, artifacts, workdir) -> {title: file name}`; robust_jax/report.py iterates
over them. Nothing here is imported by this file, so importing one evaluator loads only what it
needs.
"""
