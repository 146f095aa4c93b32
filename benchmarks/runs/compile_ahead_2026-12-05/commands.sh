#!/bin/bash
# Issue 16, 2026-12-05 (stop 31): each attack's program compiled in a background thread while the
# phases before it run (robust_jax/eval/robust.py, _Phases.ahead; eval.compile_ahead), as of
# commit 8df5707, reverted in the next commit (no gain here). Run step 1 in a worktree of 8df5707
# (git worktree add /tmp/ca 8df5707; its own .venv, workdirs and datasets linked in). Idle
# 2-vCPU AMD EPYC (AVX-512), from the repository's root, each command alone, no persistent
# compile cache (cold). Models: the zoo's small_cnn standard and PGD-AT runs (workdirs/zoo/, as in
# ../autoattack_2026-12-05/commands.sh) and the CIFAR-10 demo checkpoint (workdirs/cifar10_demo.pt,
# sha256 59479dcf...).
set -euo pipefail
OUT=benchmarks/runs/compile_ahead_2026-12-05
quiet() { grep -v -i 'warn\|^I1\|^W1'; }
AB=$OUT/suite_ab.py
# 1. The suite alone (robust_jax.evaluate, suite='standard', no named attacks), compile ahead off
#    and on alternating: three rounds on each small_cnn, two on the CIFAR-10 ResNet.
for r in 1 2 3; do for m in workdirs/zoo/standard workdirs/zoo/pgd_at; do for a in off on; do
  PYTHONPATH=. .venv-ref/bin/python $AB $m $a 2>&1 | grep "compile_ahead=" | sed "s/^/round $r: /" \
    | tee -a $OUT/suite_ab.log
done; done; done
for r in 1 2; do for a in off on; do
  PYTHONPATH=. .venv-ref/bin/python $AB cifar10_demo $a 2>&1 | grep "compile_ahead=" \
    | sed "s/^/round $r: /" | tee -a $OUT/suite_ab.log
done; done
# 2. How many cores XLA:CPU's compiler keeps busy (why step 1 shows no gain): APGD-T's and Square's
#    evaluation programs on 32 rows, each compiled alone, three times.
PYTHONPATH=. .venv/bin/python $OUT/compile_threads.py 2>&1 | grep rows: | tee $OUT/compile_threads.log
