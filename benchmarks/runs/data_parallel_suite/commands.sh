#!/bin/bash
# The standard suite, data-parallel (issue 16 goal 2), from the repository's root, 2026-12-04.
# The model: the default config's PGD-AT small_cnn on Fashion-MNIST, 600 steps.
set -euo pipefail
.venv/bin/python launch.py --workdir=workdirs/scaling_model --config.train.steps=600 \
    --config.eval.suite= --config.eval.num_examples=200 --config.eval.sanity_checks=False \
    --progress=false
.venv/bin/python benchmarks/data_parallel.py --suite=workdirs/scaling_model --devices=1,2,4 \
    --processes=2 --n=512 --batch=256 --json=benchmarks/runs/data_parallel_suite/suite_scaling.json \
    2>&1 | tee benchmarks/runs/data_parallel_suite/suite_scaling.log
