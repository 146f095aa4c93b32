"""Slow: PGD adversarial training really buys robustness on Fashion-MNIST (standard training for
one epoch, PGD-AT for 200 steps of the same one-epoch schedule: 43% of an epoch)."""

import json

import pytest

from tests.test_launch import launch
from tests.test_launch import needs_fashion_mnist

COMMON = ['--config.train.epochs=1', '--config.eval.num_examples=500', '--progress=false',
          '--config.checkpoint.every_steps=1000', '--config.eval.sanity_checks=false']


@pytest.mark.slow
@needs_fashion_mnist
def test_pgd_training_is_far_more_robust_than_standard_training(tmp_path, tfds_dir):
  results = {}
  for defense, steps in (('standard', 0), ('pgd_at', 200)):
    wd = tmp_path / defense
    r = launch(f'--workdir={wd}', f'--config.defense.name={defense}',
               f'--config.train.steps={steps}', *COMMON,
               data_dir=tfds_dir, timeout=900, fast_compile=False)
    assert r.returncode == 0, r.stderr[-3000:]
    results[defense] = json.loads((wd / 'results.json').read_text())
  std, adv = results['standard'], results['pgd_at']
  assert std['clean_accuracy'] > 0.75 and adv['clean_accuracy'] > 0.6
  # Standard training is broken by eps = 0.1; PGD-AT holds a large part of its accuracy.
  assert std['attacks']['pgd20']['accuracy'] < 0.2
  assert adv['attacks']['pgd20']['accuracy'] > std['attacks']['pgd20']['accuracy'] + 0.3
  # The stronger attack is never weaker per example: worst case <= every row.
  for res in (std, adv):
    assert res['worst_case_accuracy'] <= min(a['accuracy'] for a in res['attacks'].values())
