#!/bin/bash
# Issue 16, 2026-12-05 (stop 31): would drawing Square's random windows and signs for a block of
# queries at once (the same bits) make it faster? Idle 2-vCPU AMD EPYC (AVX-512), from the
# repository's root, alone; the zoo's PGD-AT small_cnn (workdirs/zoo/pgd_at).
set -euo pipefail
OUT=benchmarks/runs/square_draws_2026-12-05
for k in 50 250; do
  PYTHONPATH=. .venv/bin/python $OUT/square_draws.py 336 $k 2>&1 | grep "^round" | tee -a $OUT/square_draws.log
done
