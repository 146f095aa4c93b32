#!/bin/bash
# The commands behind BENCHMARKS.md's CPU section (2026-12-02), run one after another on an idle
# 2-vCPU AMD EPYC (AVX2) at commit 4d9fd89; each NAME.log / NAME.json here is one command's output.
# .venv: make install-dev. .venv-ref: requirements-ref.txt. /tmp/peers: cleverhans, foolbox, eagerpy,
# GitPython, gitdb, smmap wheels unpacked (pip download --no-deps ...; see BENCHMARKS.md).
set -e
R=.venv-ref/bin/python
V=.venv/bin/python
O=${O:-/tmp/bench}
mkdir -p $O
$R benchmarks/side_by_side.py --peer_path=/tmp/peers --models=small_cnn,madry_cnn --impls=robust_jax,robust_jax_plain_ops,torchattacks,torch_plain,torch_cl,foolbox --repeats=3 --at_steps=468 --at_block=117 --json=$O/sbs.json > $O/sbs.log 2>&1
ROBUST_JAX_XLA_DEFAULTS=0 $R benchmarks/side_by_side.py --models=small_cnn,madry_cnn --impls=robust_jax,torch_cl --repeats=3 --at_model= --json=$O/sbs_noflag.json > $O/sbs_noflag.log 2>&1
$V launch.py --mode=benchmark --workdir=workdirs/bench_cpu --config.benchmark.models=small_cnn,madry_cnn --config.benchmark.batch_sizes=256,1024 --config.benchmark.repeats=3 > $O/harness.log 2>&1
$R benchmarks/side_by_side.py --models=preact_resnet18 --impls=robust_jax,torchattacks,torch_plain,torch_cl --model_steps=preact_resnet18:2 --repeats=2 --at_model= --json=$O/preact_sbs.json > $O/preact_sbs.log 2>&1
$V launch.py --mode=benchmark --workdir=workdirs/bench_cpu_preact --config.benchmark.models=preact_resnet18 --config.benchmark.batch_sizes=256 --config.benchmark.model_steps=preact_resnet18:2 --config.train_attack.steps=1 --config.benchmark.repeats=2 > $O/harness_preact.log 2>&1
$V launch.py --mode=benchmark --workdir=workdirs/bench_cpu_wrn --config.benchmark.models=wide_resnet --config.benchmark.batch_sizes=256 --config.benchmark.model_steps=wide_resnet:1 --config.train_attack.steps=1 --config.benchmark.repeats=1 --config.benchmark.warmup=0 > $O/harness_wrn.log 2>&1
$R benchmarks/side_by_side.py --peer_path=/tmp/peers --models=small_cnn,madry_cnn --impls=robust_jax,cleverhans --steps=10 --repeats=2 --at_model= --json=$O/cleverhans.json > $O/cleverhans.log 2>&1
$V benchmarks/scaling.py --batches=32,128,512 --steps=5 --steps_list=1,10,40 --batch=64 --models=small_cnn,madry_cnn --wrn_depth=16 --wrn_widths=1,2 --repeats=2 --json=$O/scaling.json > $O/scaling.log 2>&1
$V benchmarks/data_parallel.py --devices=1,2,4 --batch=64 --steps=5 --repeats=2 --json=$O/dp.json > $O/dp.log 2>&1
$V launch.py --mode=benchmark --workdir=workdirs/bench_cpu_bf16 --config.benchmark.models=small_cnn,madry_cnn --config.benchmark.batch_sizes=256 --config.benchmark.repeats=3 --config.model.dtype=bfloat16 > $O/bench_bf16.log 2>&1
