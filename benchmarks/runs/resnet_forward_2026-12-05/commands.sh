#!/bin/bash
# Issue 16, 2026-12-05 (stop 31): why the CIFAR-10 demo ResNet's Square is slower per query in
# robust_jax than in torch. Idle 2-vCPU AMD EPYC (AVX-512), from the repository's root, each
# command alone; the demo checkpoint workdirs/cifar10_demo.pt (sha256 59479dcf...).
set -euo pipefail
OUT=benchmarks/runs/resnet_forward_2026-12-05
# 1. The whole network: forward pass and input gradient per row, 48 rows (Square's 46 points).
PYTHONPATH=. .venv-ref/bin/python $OUT/forward.py 48 2>&1 | grep "per row" | tee $OUT/forward.log
# 2. Each of its convolution shapes alone, forward, 48 rows.
for r in 1 2; do  # two rounds (the second run after the rest of this script)
  PYTHONPATH=. .venv-ref/bin/python $OUT/convs.py 2>&1 | grep GFLOP | sed "s/^/round $r: /" | tee -a $OUT/convs.log
done
# 3. The two thin shapes under XLA:CPU's other convolution back ends (flags only; robust_jax's
#    own flag stays unless ROBUST_JAX_XLA_DEFAULTS=0).
for fl in --xla_cpu_experimental_xnn_fusion_type=individual_convolution --xla_cpu_use_onednn=true \
          --xla_cpu_experimental_onednn_fusion_type=individual_convolution; do
  XLA_FLAGS=$fl PYTHONPATH=. .venv-ref/bin/python $OUT/convs.py 2>&1 | grep GFLOP | sed -n 1,2p \
    | sed "s/^/$fl: /" | tee -a $OUT/convs_flags.log
done
ROBUST_JAX_XLA_DEFAULTS=0 PYTHONPATH=. .venv-ref/bin/python $OUT/convs.py 2>&1 | grep GFLOP \
  | sed -n 1,2p | sed "s/^/ROBUST_JAX_XLA_DEFAULTS=0 (YNNPACK convolutions): /" \
  | tee -a $OUT/convs_flags.log
# 4. The thin convolutions written other ways (patches matmul, column shifts, NCHW), in XLA.
PYTHONPATH=. .venv/bin/python $OUT/alternatives.py 2>&1 | grep " us " | tee $OUT/alternatives.log
