#!/bin/bash
# Issue 16, 2026-12-05 (stop 29): the gradient attacks' evaluation programs compiled with XLA:CPU's
# older fusion emitters (robust_jax/xla_flags.py, program_options). Idle 2-vCPU machine, each
# command alone, from the repository's root. "before" = the same code with the user's
# XLA_FLAGS=--xla_cpu_use_fusion_emitters=true, which program_options yields to, so every program
# compiles as before this change; "after" = the default. Models: the zoo's small_cnn PGD-AT and
# standard runs (workdirs/zoo/, as in ../autoattack_2026-12-05/commands.sh) and
# workdirs/cifar10_demo.pt (sha256 59479dcf...).
set -euo pipefail
OUT=benchmarks/runs/compile_2026-12-05
quiet() { grep -v -i 'warn\|^I1\|^W1'; }
BEFORE=--xla_cpu_use_fusion_emitters=true
# 1. PGD harness (goal 3): PGD-40, batch 256, two rounds of before/after, no compile cache.
for r in 1 2; do for t in before after; do for m in small_cnn madry_cnn; do
  f=""; [ $t = before ] && f=$BEFORE
  rm -rf /tmp/h_$m; XLA_FLAGS="$f" .venv/bin/python launch.py --mode=benchmark --config.model.name=$m \
      --config.benchmark.train_step=False --workdir=/tmp/h_$m > /dev/null 2>&1
  cp /tmp/h_$m/benchmark.json $OUT/pgd_harness_${m}_${t}_$r.json
  .venv/bin/python -c "import json; d = json.load(open('$OUT/pgd_harness_${m}_${t}_$r.json')); print('$t round $r $m: %.0f img-steps/s, %.1f%% of %.0f GFLOP/s, compile %.2f s' % (d['img_steps_per_s'], d['pct_of_ceiling'], d['ceiling_gflops'], d['compile_s']))" | tee -a $OUT/pgd_harness.log
done; done; done
# 2. APGD-CE alone through the evaluation loop vs torchattacks (all 500 images of the PGD-AT
#    model, 100 iterations, no compile cache), before/after, two rounds.
for r in 1 2; do for t in before after; do
  f=""; [ $t = before ] && f=$BEFORE
  XLA_FLAGS="$f" .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/pgd_at --n=500 \
      --torch_threads=2 --jax_path=eval --attacks=apgd_ce --json=$OUT/apgd_ce_${t}_$r.json 2>&1 | quiet \
      | grep '^apgd_ce' | sed "s/^/$t round $r: /" | tee -a $OUT/apgd_ce.log
done; done
# 3. The standard suite against torchattacks' cascade at the paper's settings (after only; no
#    compile cache): small_cnn PGD-AT and standard, two rounds each; CIFAR-10 PreAct ResNet-18/8.
for m in pgd_at standard; do
  .venv-ref/bin/python benchmarks/agreement.py --checkpoint=workdirs/zoo/$m --n=500 --suite \
      --rounds=2 --torch_threads=2 --torch_suites=paper --json=$OUT/suite_$m.json 2>&1 | quiet \
      > $OUT/suite_$m.log
done
.venv-ref/bin/python benchmarks/agreement.py --torch_checkpoint=workdirs/cifar10_demo.pt --data=cifar10 \
    --model=preact_resnet18 --base_width=8 --n=200 --suite --rounds=1 --torch_threads=2 \
    --torch_suites=paper --json=$OUT/suite_cifar10_demo.json 2>&1 | quiet > $OUT/suite_cifar10_demo.log
# 4. Why per program: each attack's program with and without the option (same code, one process
#    per attack, two rounds each; at the end of the session), the PreAct ResNet-18/8 PGD-10 and
#    FGSM-RS training step with the option process-wide on and off (harness, batch 128), and
#    other options on the madry_cnn PGD program.
#    (emitters_ab.py and madry_options.py were restyled for ruff after this run, same logic;
#    rerun once each afterwards: the same output bits.)
for a in "pgd 512" "apgd_ce 512" "apgd_t 256" "fab_t 256" "square 256"; do
  PYTHONPATH=. .venv/bin/python $OUT/emitters_ab.py $a 2>&1 | grep "opts=" | tee -a $OUT/emitters_ab.log
done
for r in 1 2; do for v in true false; do
  rm -rf /tmp/hr; XLA_FLAGS=--xla_cpu_use_fusion_emitters=$v .venv/bin/python launch.py --mode=benchmark \
      --config=configs/papers/wong2020_fast.py:cifar10_fgsm_rs --config.model.base_width=8 \
      --config.benchmark.batch_size=128 --config.benchmark.attack.steps=10 --workdir=/tmp/hr > /dev/null 2>&1
  cp /tmp/hr/benchmark.json $OUT/resnet_emitters_${v}_$r.json
  .venv/bin/python -c "import json; d = json.load(open('$OUT/resnet_emitters_${v}_$r.json')); t = d['train_step']; print('fusion emitters $v round $r: PGD %.0f img-steps/s, compile %.2f s; train %.1f img/s, compile %.2f s' % (d['img_steps_per_s'], d['compile_s'], t['img_per_s'], t['compile_s']))" | tee -a $OUT/resnet_emitters.log
done; done
PYTHONPATH=. .venv/bin/python $OUT/madry_options.py madry_cnn '{}' '{"xla_cpu_use_fusion_emitters": false}' \
    '{"xla_cpu_use_fusion_emitters": false, "xla_cpu_enable_concurrency_optimized_scheduler": true}' \
    '{"xla_cpu_use_fusion_emitters": false, "xla_cpu_prefer_vector_width": 512}' \
    '{"xla_cpu_use_fusion_emitters": false, "xla_cpu_enable_fast_min_max": true}' 2>&1 | grep madry_cnn \
    | tee $OUT/madry_options.log
