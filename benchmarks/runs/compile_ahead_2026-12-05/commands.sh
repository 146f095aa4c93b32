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
# 1b. --mode=eval of the zoo's PGD-AT small_cnn with the zoo's evaluation (naive PGD-40, then the
#    standard suite), 500 images, no sanity checks, compile ahead off and on: eval_seconds of each
#    results.json. Written for two rounds; stopped after the first (the decision was made).
for r in 1; do for a in False True; do
  rm -rf /tmp/ca_eval && cp -r workdirs/zoo/pgd_at /tmp/ca_eval && rm -rf /tmp/ca_eval/results.json /tmp/ca_eval/eval_progress
  .venv/bin/python launch.py --mode=eval --config=configs/zoo.py:pgd_at --workdir=/tmp/ca_eval \
      --config.eval.num_examples=500 --config.eval.sanity_checks=False --compile_cache=off \
      --config.eval.compile_ahead=$a --progress=false > /dev/null 2>&1
  .venv/bin/python -c "
import json; r = json.load(open('/tmp/ca_eval/results.json'))
print('round $r compile_ahead=$a: eval %.1f s, naive %.1f s, suite %s, worst case %.3f' % (
    r['eval_seconds'], r['attacks']['naive']['seconds'],
    [(a['name'], round(a['seconds'], 1)) for a in r['suite']['attacks']], r['worst_case_accuracy']))
" | tee -a $OUT/launch_eval_ab.log
done; done
# 2. How many cores XLA:CPU's compiler keeps busy (why step 1 shows no gain): APGD-T's and Square's
#    evaluation programs on 32 rows, each compiled alone, three times.
PYTHONPATH=. .venv/bin/python $OUT/compile_threads.py 2>&1 | grep rows: | tee $OUT/compile_threads.log
