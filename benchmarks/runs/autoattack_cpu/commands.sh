#!/bin/bash
# The AutoAttack comparison of BENCHMARKS.md: robust_jax's standard suite (evaluation path, stages,
# compiles included) vs torchattacks' AutoAttack 'standard', interleaved, on a shared 2-core CPU.
# Models: the zoo's Fashion-MNIST small_cnn, PGD-AT and standard training (copies of
# workdirs/zoo/pgd_at and workdirs/zoo/standard in /tmp/aa_models).
set -x
cd "$(dirname "$0")/../../.."
OUT=benchmarks/runs/autoattack_cpu
PY=/work/main/.venv-ref/bin/python
nice $PY benchmarks/agreement.py --checkpoint=/tmp/aa_models/pgd_at --n=500 --suite --rounds=1 \
  --torch_threads=1 --json=$OUT/suite_pgd_at.json 2>&1 | grep -v -i warn > $OUT/suite_pgd_at.log
nice $PY benchmarks/agreement.py --checkpoint=/tmp/aa_models/standard --n=500 --suite --rounds=1 \
  --torch_threads=1 --json=$OUT/suite_standard.json 2>&1 | grep -v -i warn > $OUT/suite_standard.log
nice $PY benchmarks/agreement.py --checkpoint=/tmp/aa_models/pgd_at --n=500 --jax_path=eval \
  --torch_threads=1 --json=$OUT/attacks_pgd_at.json 2>&1 | grep -v -i warn > $OUT/attacks_pgd_at.log
