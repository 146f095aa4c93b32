#!/bin/bash
# Call 3 on the lent H200 (issue 17 item 9, issue 16 goal 1), after calls 1-2 (call1.sh; the
# CIFAR-10 PNGs in three parts, copied to /tmp/cifar10): Wong et al.'s full CIFAR-10 row (15
# epochs FGSM-RS, PreAct ResNet-18, evaluated on the first 1,000 test images with PGD-50 x 10 and
# the standard suite), then that model exported to PyTorch and the standard suite timed against
# torchattacks' AutoAttack on the same GPU. $OUT: logs, JSON, table, results.
D=benchmarks/gpu
source $D/env.sh
ROW=${ROW:-cifar10_fgsm_rs}
W=workdirs/papers/wong2020_fast/$ROW
start=$(date +%s)
left() { echo $(( ${BUDGET:-560} - ($(date +%s) - start) )); }
(cd /tmp/cifar10 && sha256sum -c --quiet SHA256SUMS) 2>&1 | tail -3 | tee $OUT/data.txt
/usr/bin/time -f 'prepare: %e s' python3 -m robust_jax.data.prepare --name=cifar10 \
    --source_dir=/tmp/cifar10 2>&1 | tail -2 | tee -a $OUT/data.txt
timeout $(( $(left) - ${RESERVE:-190} )) python3 launch.py --mode=table \
    --config=configs/papers/wong2020_fast.py --table_rows=$ROW \
    --config.data.source_dir=/tmp/cifar10 --progress=false $EXTRA > $OUT/row.log 2>&1
tail -20 $OUT/row.log
echo "row finished after $(( $(date +%s) - start )) s"
mkdir -p $OUT/row && cp $W/results.json $W/report.md $W/metrics.jsonl \
    workdirs/papers/wong2020_fast/table.md $OUT/row/
python3 launch.py --mode=export --checkpoint=$W --export_path=workdirs/gpu/wong.pt \
    --config=configs/papers/wong2020_fast.py:$ROW --config.data.source_dir=/tmp/cifar10 $EXTRA \
    2>&1 | grep --line-buffered -v "^I1\|^W1" | tail -3
timeout $(( $(left) - 10 )) python3 benchmarks/agreement.py \
    --torch_checkpoint=workdirs/gpu/wong.pt --model=preact_resnet18 \
    --base_width=${BASE_WIDTH:-64} --data=cifar10 --n=${N:-500} --suite --rounds=1 \
    --torch_device=${TORCH_DEVICE:-cuda} --json=$OUT/suite_vs_torchattacks.json \
    2>&1 | grep --line-buffered -v "^I1\|^W1" | tee $OUT/suite_vs_torchattacks.log
echo "call 3 finished after $(( $(date +%s) - start )) s"
