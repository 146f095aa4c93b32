#!/usr/bin/env bash
# Makes sure the offline default dataset (Fashion-MNIST IDX files) is on this machine.
# Installs Debian's dataset-fashion-mnist when run as root; otherwise says exactly what to do.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
missing() { for f in $files; do [ -s "$dir/$f" ] || return 0; done; return 1; }
missing || exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Fashion-MNIST not found in $dir: installing Debian's dataset-fashion-mnist ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  missing && { echo "error: dataset-fashion-mnist installed but $dir is incomplete" >&2; exit 1; }
  exit 0
fi
cat >&2 <<MSG
error: Fashion-MNIST (the offline default dataset) is not in $dir.
Fix it with one of:
  sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist     (Debian/Ubuntu)
  or put the four IDX files ($files) in a folder and run
  make demo DATA_CHECK=0 ARGS=--config.data.source_dir=/that/folder
MSG
exit 1
