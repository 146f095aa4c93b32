#!/usr/bin/env bash
# Copies the small result files of runs under workdirs/ into results/ (kept in git), so every
# figure that RESULTS.md quotes can be checked against its file:
#   bash scripts/keep_results.sh workdirs/zoo/pgd_at workdirs/demo_seeds ...
# Each WORKDIR/.../{results.json,report.md,seeds.json,seeds.md,monitor.json,config.json} found is
# copied to results/<path below workdirs/>/; checkpoints, metrics and plots stay behind.
set -euo pipefail
cd "$(dirname "$0")/.."
for wd in "$@"; do
  wd="${wd%/}"
  case "$wd" in workdirs/*) ;; *) echo "keep_results: $wd is not under workdirs/" >&2; exit 2 ;; esac
  found=0
  while IFS= read -r -d '' f; do
    rel="${f#workdirs/}"
    mkdir -p "results/$(dirname "$rel")"
    cp "$f" "results/$rel"
    found=1
  done < <(find "$wd" \( -name checkpoints -o -name tensorboard -o -name progress -o -name 'monitor_best' \) -prune -o \
             -type f \( -name results.json -o -name report.md -o -name seeds.json -o -name seeds.md \
             -o -name monitor.json -o -name config.json \) -print0)
  [ "$found" = 1 ] || { echo "keep_results: no results under $wd" >&2; exit 2; }
done
