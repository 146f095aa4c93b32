#!/bin/bash
# Issue 16, 2026-12-05 (stop 30): small_cnn's dense forward pass pads batches of fewer than 64 rows
# to 64 (robust_jax/models/fast_ops.py, dot_general), so its logits no longer depend on the batch
# size and the evaluation runs a cascade's few points still robust at their own size (rounded up to
# 8 rows) instead of 64. Idle 2-vCPU AMD EPYC (AVX-512), from the repository's root, each command
# alone. "old" = ddc8bd2 (the commit before), "new" = this tree. Models: the zoo's small_cnn
# standard and PGD-AT runs (workdirs/zoo/, as in ../autoattack_2026-12-05/commands.sh).
set -euo pipefail
OUT=benchmarks/runs/small_rows_2026-12-05
quiet() { grep -v -i 'warn\|^I1\|^W1'; }
BITS=benchmarks/runs/autoattack_2026-12-05/batch_bits.py
S=benchmarks/runs/autoattack_paper_settings_2026-12-04/suite_compiles.py
git worktree add --detach /tmp/old ddc8bd2 && ln -s "$PWD/.venv" /tmp/old/.venv && ln -s "$PWD/workdirs" /tmp/old/workdirs
# 1. small_cnn's bits below 64 rows, old and new (L / G: logits / input gradients the same as in
#    the 64-row batch).
for t in old new; do d=$PWD; [ $t = old ] && d=/tmp/old
  (cd $d && PYTHONPATH=$d .venv/bin/python $OLDPWD/$BITS small_cnn 28,28,1 below 2>&1 | tail -1 \
     | sed "s/^/$t: /") | tee -a $OUT/batch_bits_small.log
done
# 2. The suite alone on the standard small_cnn (500 images; 28 points still robust after APGD-CE),
#    old and new alternating, three rounds, no compile cache.
sed 's#workdirs/zoo/pgd_at#workdirs/zoo/standard#' $S > /tmp/suite_standard.py
for r in 1 2 3; do for t in old new; do d=$PWD; [ $t = old ] && d=/tmp/old
  (cd $d && PYTHONPATH=$d .venv/bin/python /tmp/suite_standard.py 2>&1 | grep ^suite \
     | sed "s/^/$t round $r: /") | tee -a $OUT/suite_ab.log
done; done
git worktree remove --force /tmp/old
# 3. The standard suite against torchattacks' cascade at the paper's settings, no compile cache:
#    the standard small_cnn (two rounds) and the PGD-AT one (one round; its subsets are above 64
#    rows, so unchanged).
.venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/standard --n=500 --suite \
    --rounds=2 --torch_threads=2 --torch_suites=paper --json=$OUT/suite_standard.json 2>&1 | quiet \
    > $OUT/suite_standard.log
.venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/pgd_at --n=500 --suite \
    --rounds=1 --torch_threads=2 --torch_suites=paper --json=$OUT/suite_pgd_at.json 2>&1 | quiet \
    > $OUT/suite_pgd_at.log
# 4. APGD-T, FAB-T and Square's programs alone on 32 rows, XLA's default and older fusion
#    emitters (is the per-program option worth it on short subsets?), two rounds each.
for a in "apgd_t 32" "fab_t 32" "square 32"; do
  PYTHONPATH=. .venv/bin/python benchmarks/runs/compile_2026-12-05/emitters_ab.py $a 2>&1 | grep "opts=" \
      | tee -a $OUT/emitters_32.log
done
# 5. trades_cnn's bits below 64 rows with its dense layers plain ("off": the class attribute set
#    False for the run) and through fast_ops.dot_general ("on", this tree's default).
for v in False True; do
  PYTHONPATH=. .venv/bin/python -c "
import runpy, sys
from robust_jax.models import cnns
cnns.TradesCNN.small_batch_dense = $v
sys.argv = ['batch_bits.py', 'trades_cnn', '28,28,1', 'below']
runpy.run_path('$BITS', run_name='__main__')" 2>&1 | tail -1 | sed "s/^/small_batch_dense=$v: /" \
      | tee -a $OUT/batch_bits_trades.log
done
# 6. The same results, bit for bit, as the commit before (scripts/same_results.py; the last line
#    of each run is kept): small_cnn suite at two sizes (head f335b08, the tree of 60719ef before its
#    message was amended), trades_cnn (head 13903f7).
SR="--config.eval.sanity_examples=100 --config.eval.suite=standard"
for f in "--config.train.steps=200 --config.eval.num_examples=1000" \
         "--config.train.steps=30 --config.eval.num_examples=200" \
         "--config.model.name=trades_cnn --config.train.steps=30 --config.eval.num_examples=200"; do
  .venv/bin/python scripts/same_results.py --base=ddc8bd2 --head=HEAD -- $f $SR 2>&1 | tail -1 \
      | tee -a $OUT/same_results.log
done
# 7. Square's cost beyond the forward passes (PGD-AT small_cnn, 336 rows), two runs.
for r in 1 2; do
  PYTHONPATH=. .venv/bin/python $OUT/square_overhead.py 336 2>&1 | grep queries | tee -a $OUT/square_overhead.log
done
# 8. small_cnn vmapped over single images / blocks, fast_ops on and off: at 60719ef (each mapped
#    element padded to 64 rows) and at 6cfe3fd (the mapped rows pooled first, custom_vmap).
for c in 60719ef 6cfe3fd; do
  git worktree add --detach /tmp/vm $c > /dev/null 2>&1
  (cd /tmp/vm && PYTHONPATH=/tmp/vm $OLDPWD/.venv/bin/python $OLDPWD/$OUT/vmap_cost.py 2>&1 | grep fast_ops \
     | sed "s/^/$c: /") | tee -a $OUT/vmap_cost.log
  git worktree remove --force /tmp/vm
done
