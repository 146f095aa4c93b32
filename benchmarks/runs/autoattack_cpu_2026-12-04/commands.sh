#!/bin/bash
# AutoAttack on an idle 2-core CPU (issue 16 goal 1), from the repository's root: robust_jax's
# standard suite (robust_jax.evaluate, compiles included) vs torchattacks 3.5.1's AutoAttack
# 'standard', interleaved over 2 rounds in one process, same weights, the first 500 Fashion-MNIST
# test images, torch given both cores (the protocol). Models: the zoo's small_cnn runs,
# trained with the zoo's configs (evaluation cut short; only the weights are used here):
#   .venv/bin/python launch.py --config=configs/zoo.py:pgd_at --workdir=workdirs/zoo/pgd_at \
#       --config.eval.suite= --config.eval.num_examples=200 --config.eval.sanity_checks=False
#   (and :standard into workdirs/zoo/standard)
set -euo pipefail
OUT=benchmarks/runs/autoattack_cpu_2026-12-04
for m in pgd_at standard; do
  .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/$m --n=500 --suite \
      --rounds=2 --torch_threads=2 --json=$OUT/suite_$m.json 2>&1 | grep -v -i "warn\|^I1\|^W1" \
      | tee $OUT/suite_$m.log
done
