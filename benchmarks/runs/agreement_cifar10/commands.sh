#!/bin/bash
# AutoAttack agreement on a CIFAR-10 PyTorch checkpoint (issue 18 item 4), from the repository's
# root. The model: the README's CIFAR-10 demo (FGSM-RS, PreAct ResNet-18 at base_width 8, one
# epoch; model_results.json is its results.json), exported to a PyTorch state dict; torch reads
# that file into benchmarks/torch_layouts.py's PreActResNet18, robust_jax through
# robust_jax.interop.torch_models. Needs .venv-ref (requirements-ref.txt).
set -euo pipefail
.venv/bin/python launch.py --config=configs/papers/wong2020_fast.py:cifar10_fgsm_rs_cpu \
    --workdir=workdirs/cifar10_demo --config.train.epochs=1 --config.eval.suite=
.venv/bin/python launch.py --mode=export --checkpoint=workdirs/cifar10_demo \
    --export_path=workdirs/cifar10_demo.pt --config=configs/papers/wong2020_fast.py:cifar10_fgsm_rs_cpu
.venv-ref/bin/python benchmarks/agreement.py --torch_checkpoint=workdirs/cifar10_demo.pt \
    --model=preact_resnet18 --base_width=8 --data=cifar10 --n=200 --suite --rounds=1 \
    --json=benchmarks/runs/agreement_cifar10/suite_n200.json \
    2>&1 | tee benchmarks/runs/agreement_cifar10/suite_n200.log
# 2026-12-04, 20:41 UTC, the machine otherwise idle, torch on both cores (issue 16's protocol):
.venv-ref/bin/python benchmarks/agreement.py --torch_checkpoint=workdirs/cifar10_demo.pt \
    --model=preact_resnet18 --base_width=8 --data=cifar10 --n=200 --suite --rounds=1 \
    --torch_threads=2 --json=benchmarks/runs/agreement_cifar10/suite_n200_idle.json \
    2>&1 | grep -v -i 'warn\|^I1\|^W1' > benchmarks/runs/agreement_cifar10/suite_n200_idle.log
