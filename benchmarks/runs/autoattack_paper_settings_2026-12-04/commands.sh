#!/bin/bash
# AutoAttack on an idle 2-core CPU (issue 16 goal 1), from the repository's root, torch on both
# cores: robust_jax's standard suite (robust_jax.evaluate, compiles included) against torchattacks
# 3.5.1's AutoAttack twice, interleaved in one process with the same weights and images:
#   shipped: AutoAttack(version='standard') as torchattacks builds it (APGD-CE, APGD-T and FAB-T
#            at their classes' default of 10 iterations);
#   paper:   the same cascade (MultiAttack) at the AutoAttack paper's settings, 100 iterations,
#            the ones robust_jax's suite runs.
# Models: the zoo's small_cnn runs (PGD-AT and standard training, the zoo's configs, 3 epochs):
#   .venv/bin/python launch.py --config=configs/zoo.py:pgd_at --workdir=workdirs/zoo/pgd_at \
#       --config.eval.suite= --config.eval.num_examples=200 --config.eval.sanity_checks=False
#   (and :standard into workdirs/zoo/standard), and the README's CIFAR-10 demo checkpoint
#   exported to workdirs/cifar10_demo.pt (sha256 59479dcf...; benchmarks/runs/agreement_cifar10/).
set -euo pipefail
OUT=benchmarks/runs/autoattack_paper_settings_2026-12-04
quiet() { grep -v -i 'warn\|^I1\|^W1'; }
for m in pgd_at standard; do
  .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/$m --n=500 --suite \
      --rounds=2 --torch_threads=2 --json=$OUT/suite_$m.json 2>&1 | quiet | tee $OUT/suite_$m.log
done  # then the default twice more and onednn once more, appended to xla_flags.log
# Each attack on its own, on all 500 images (both frameworks at 100 iterations).
.venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/pgd_at --n=500 \
    --torch_threads=2 --jax_path=eval --json=$OUT/attacks_pgd_at.json 2>&1 | quiet \
    | tee $OUT/attacks_pgd_at.log
.venv-ref/bin/python benchmarks/agreement.py --torch_checkpoint=workdirs/cifar10_demo.pt \
    --model=preact_resnet18 --base_width=8 --data=cifar10 --n=200 --suite --rounds=1 \
    --torch_threads=2 --json=$OUT/suite_cifar10_demo.json 2>&1 | quiet \
    | tee $OUT/suite_cifar10_demo.log
# fast_ops.strided_conv A/B (the commit before it, 49de6ce, against this tree), one core, one
# XLA thread, alternating, then both cores with the PGD harness:
git worktree add --detach /tmp/old 49de6ce && ln -s "$PWD/.venv" /tmp/old/.venv
for r in 1 2; do for t in /tmp/old $PWD; do
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" PYTHONPATH=$t \
      taskset -c 1 .venv/bin/python $OUT/forward_ab.py $t 2>&1 | tail -1 | tee -a $OUT/forward_ab.log
done; done
for r in 1 2; do for t in old new; do d=$PWD; [ $t = old ] && d=/tmp/old
  (cd $d && .venv/bin/python launch.py --mode=benchmark --config.model.name=small_cnn \
      --config.benchmark.batch_size=256 --workdir=/tmp/bm_$t$r) >/dev/null 2>&1
  cp /tmp/bm_$t$r/benchmark.json $OUT/pgd_harness_$t$r.json
done; done
git worktree remove --force /tmp/old
# Later (code 'agreement.py --suite: torchattacks' cascade timed attack by attack'): one more round
# on the PGD-AT model, for torchattacks' per-attack seconds in its cascade.
.venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/pgd_at --n=500 --suite \
    --rounds=1 --torch_threads=2 --json=$OUT/suite_pgd_at_cascade.json 2>&1 | quiet \
    | tee $OUT/suite_pgd_at_cascade.log
# Supporting checks for the text (run after the above, machine otherwise idle except where said):
# batch invariance of small_cnn's bits, the suite alone with its compile times, XLA:CPU flags.
PYTHONPATH=. .venv/bin/python $OUT/batch_bits.py 2>&1 | grep rows | tee $OUT/batch_bits.log
JAX_LOG_COMPILES=1 PYTHONPATH=. .venv/bin/python $OUT/suite_compiles.py 2>&1 \
    | grep -E "Finished XLA compilation of jit\((per_device|step)\)|^suite" | tee $OUT/suite_compiles.log
for f in "" --xla_cpu_prefer_vector_width=512 --xla_cpu_use_onednn=true --xla_cpu_use_xnnpack=true \
    --xla_cpu_use_thunk_runtime=false; do
  XLA_FLAGS="$f" PYTHONPATH=. .venv/bin/python $OUT/forward_ab.py "flags '$f'" 2>&1 | tail -1 | tee -a $OUT/xla_flags.log
done  # then the default twice more and onednn once more, appended to xla_flags.log
# Earlier the same session, the one-batch layout's before/after (one round each, same command as
# above with --rounds=1; the second with --torch_suites=shipped): suite_pgd_at_6e748a6.json (code
# 6e748a6, 64-row batches) and suite_pgd_at_8034070.json (8034070 = 0e8adbb, one 384-row batch).
