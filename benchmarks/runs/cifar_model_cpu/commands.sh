#!/usr/bin/env bash
# Issue 17 item 5: which PreAct ResNet-18 width fits a <= 1 h CIFAR-10 row on a 2-core CPU.
# Run from the repo root on an otherwise idle machine; each line prints one JSON object.
set -euo pipefail
OUT=benchmarks/runs/cifar_model_cpu
for w in 8 16; do
  .venv/bin/python launch.py --mode=benchmark \
    --config=configs/papers/wong2020_fast.py:cifar10_fgsm_rs \
    --config.model.base_width=$w --config.benchmark.batch_size=128 \
    --config.benchmark.attack.steps=10 --config.benchmark.time_budget_s=60 \
    2> $OUT/preact_w$w.log | tail -1 > $OUT/preact_w$w.json
done
