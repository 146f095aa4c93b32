#!/bin/bash
# Call 1 on the lent H200 (issue 16 goal 4): the harness (PGD-40 and one PGD-AT step), float32
# (JAX's GPU default precision) and bfloat16 compute; also checks the stack. $OUT: logs + JSON.
D=benchmarks/gpu
source $D/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee $OUT/gpu.txt
python3 -c 'import jax, flax, optax, torch; print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__, "torch", torch.__version__)' | tee -a $OUT/gpu.txt
for dtype in bfloat16 float32; do
  timeout 150 python3 launch.py --mode=benchmark --workdir=workdirs/gpu/harness_$dtype \
      --config.model.dtype=$dtype --config.benchmark.batch_sizes=256 \
      --config.benchmark.models=${MODELS:-wide_resnet,preact_resnet18,madry_cnn,small_cnn} \
      2>&1 | grep --line-buffered -v "^I1\|^W1" | tee $OUT/harness_$dtype.log
  cp workdirs/gpu/harness_$dtype/benchmark.json $OUT/harness_$dtype.json
done
