#!/bin/bash
# Issue 16, 2026-12-05, idle 2-vCPU AMD EPYC (AVX-512), from the repository's root; each command
# ran alone. Models as in ../autoattack_paper_settings_2026-12-04/commands.sh (the zoo's small_cnn
# PGD-AT and standard runs; workdirs/cifar10_demo.pt, sha256 59479dcf...).
set -euo pipefail
OUT=benchmarks/runs/autoattack_2026-12-05
quiet() { grep -v -i 'warn\|^I1\|^W1'; }
# 1. Bitwise batch invariance from 64 rows up (why a subset may run at any size >= 64).
#    (Both bit checks, 1 and 9, were run again at the end of the session with the one script
#    batch_bits.py that replaced two; the same lines came out.)
for m in "small_cnn 28,28,1" "madry_cnn 28,28,1" "preact_resnet18 32,32,3"; do
  PYTHONPATH=. .venv/bin/python $OUT/batch_bits.py $m above 2>&1 | tail -1 | tee -a $OUT/batch_bits_rows.log
done
# 2. The suite alone, before (7d3c81e: subsets rounded up to 64 rows) and after (5b5bd2d: to 8),
#    alternating twice; suite_only.py = ../autoattack_paper_settings_2026-12-04/suite_compiles.py.
git worktree add --detach /tmp/old 7d3c81e && ln -s "$PWD/.venv" /tmp/old/.venv && ln -s "$PWD/workdirs" /tmp/old/workdirs
S=benchmarks/runs/autoattack_paper_settings_2026-12-04/suite_compiles.py
cp $S /tmp/suite_only.py
for r in 1 2; do for t in old new; do d=$PWD; [ $t = old ] && d=/tmp/old
  (cd $d && PYTHONPATH=$d .venv/bin/python /tmp/suite_only.py 2>&1 | grep ^suite \
     | sed "s/^/$t ($(git -C $d rev-parse --short HEAD)) round $r: /") | tee -a $OUT/suite_granule_ab.log
done; done
git worktree remove --force /tmp/old
# 3. PGD harness (goal 3), three rounds.
for r in 1 2 3; do for m in small_cnn madry_cnn; do
  .venv/bin/python launch.py --mode=benchmark --config.model.name=$m --config.benchmark.train_step=False \
      --workdir=/tmp/h_${m}_$r > /dev/null 2>&1
  cp /tmp/h_${m}_$r/benchmark.json $OUT/pgd_harness_${m}_$r.json   # summary lines: pgd_harness.log
done; done
# 4. AutoAttack against torchattacks' cascade at the paper's settings, no compile cache.
.venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/pgd_at --n=500 --suite \
    --rounds=2 --torch_threads=2 --torch_suites=paper --json=$OUT/suite_pgd_at.json 2>&1 | quiet \
    | tee $OUT/suite_pgd_at.log
# 5. The same with JAX's persistent compilation cache, starting empty: round 0 compiles and writes
#    the programs, round 1 reads them back (what a second launch.py run gets).
rm -rf /tmp/aa_cache
JAX_COMPILATION_CACHE_DIR=/tmp/aa_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.2 \
  .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/pgd_at --n=500 --suite \
    --rounds=2 --torch_threads=2 --torch_suites=paper --json=$OUT/suite_pgd_at_cache.json 2>&1 \
    | quiet > $OUT/suite_pgd_at_cache.log
# 6. The zoo's standard small_cnn retrained (workdirs/ is not kept), then cold / warm as in 5.
.venv/bin/python launch.py --config=configs/zoo.py:standard --workdir=workdirs/zoo/standard \
    --config.eval.suite= --config.eval.num_examples=200 --config.eval.sanity_checks=False --progress=false
rm -rf /tmp/aa_cache_std
JAX_COMPILATION_CACHE_DIR=/tmp/aa_cache_std JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.2 \
  .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/standard --n=500 --suite \
    --rounds=2 --torch_threads=2 --torch_suites=paper --json=$OUT/suite_standard_cache.json 2>&1 \
    | quiet > $OUT/suite_standard_cache.log
# 7. Each attack on its own (evaluation loop), both at 100 iterations: cold, then warm (the second
#    invocation reads the first one's programs back).
rm -rf /tmp/aa_cache_att
for t in cold warm; do
  JAX_COMPILATION_CACHE_DIR=/tmp/aa_cache_att JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.2 \
    .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/pgd_at --n=500 \
      --torch_threads=2 --jax_path=eval --json=$OUT/attacks_pgd_at_$t.json 2>&1 | quiet \
      > $OUT/attacks_pgd_at_$t.log
done
# 8. CIFAR-10 PreAct ResNet-18 /8 (the README's demo checkpoint exported to PyTorch), cold / warm.
rm -rf /tmp/aa_cache_c10
JAX_COMPILATION_CACHE_DIR=/tmp/aa_cache_c10 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.2 \
  .venv-ref/bin/python benchmarks/agreement.py --torch_checkpoint=workdirs/cifar10_demo.pt \
    --model=preact_resnet18 --base_width=8 --data=cifar10 --n=200 --suite --rounds=2 \
    --torch_threads=2 --torch_suites=paper --json=$OUT/suite_cifar10_demo_cache.json 2>&1 | quiet \
    > $OUT/suite_cifar10_demo_cache.log
# 9. Below 64 rows (why loop.batch_invariance asks per model), then the CIFAR-10 run of 8 again
#    with subsets below 64 rows where the model allows it (code of that commit), cold / warm.
for m in "small_cnn 28,28,1" "madry_cnn 28,28,1" "preact_resnet18 32,32,3"; do
  PYTHONPATH=. .venv/bin/python $OUT/batch_bits.py $m below 2>&1 | tail -1 | tee -a $OUT/batch_bits_small.log
done
rm -rf /tmp/aa_cache_c10b
JAX_COMPILATION_CACHE_DIR=/tmp/aa_cache_c10b JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0.2 \
  .venv-ref/bin/python benchmarks/agreement.py --torch_checkpoint=workdirs/cifar10_demo.pt \
    --model=preact_resnet18 --base_width=8 --data=cifar10 --n=200 --suite --rounds=2 \
    --torch_threads=2 --torch_suites=paper --json=$OUT/suite_cifar10_demo_small_rows.json 2>&1 \
    | quiet > $OUT/suite_cifar10_demo_small_rows.log
# 10. A Square query's cost per image against the rows (small_cnn, 331-448 rows), for the text
#     behind ROW_GRANULE (loop.bucket_sizes); run at the end of the session.
PYTHONPATH=. .venv/bin/python $OUT/query_rows.py 2>&1 | grep "rows:" | tee $OUT/query_rows.log
