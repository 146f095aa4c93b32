r"""Writes a SYNTHETIC extra-data set for config.data.extra.path (smoke runs, tests, format checks).

  python scripts/make_synthetic_extra.py --name=cifar10 --num=10000 --out=/tmp/extra.npz
  python scripts/make_synthetic_extra.py --name=cifar10 --num=10000 --shards=4 \
      --format=array_record --out=/tmp/extra_shards      # a folder of 4 shards

The images are noisy, randomly flipped copies of random training images of `--name`, with their
labels (robust_jax.data.extra.make_synthetic): the layout of the papers' generated sets (npz:
`image` uint8[N,H,W,C], `label` int[N]; or array_record), not generated data. Then:

  python launch.py --config=configs/papers/wang2023.py:cifar10_wrn28_10_edm20m_cpu \
      --config.data.extra.synthetic=0 --config.data.extra.path=/tmp/extra.npz --workdir=...
"""

import argparse
import os
import sys

import ml_collections
import numpy as np

from robust_jax.data import extra
from robust_jax.data import sources


def write(out, images, labels, shards, fmt):
  """Writes `shards` files (one: the file `out`; more: into the folder `out`)."""
  paths = [out] if shards == 1 else [os.path.join(out, f'{i:05d}.{fmt}') for i in range(shards)]
  if shards > 1:
    os.makedirs(out, exist_ok=True)
  for path, part in zip(paths, np.array_split(np.arange(len(labels)), shards)):
    if fmt == 'npz':
      np.savez(path, image=images[part], label=labels[part])  # uncompressed: memory-mapped
    else:
      extra.write_array_record(path, images[part], labels[part])
  return paths


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--name', default='cifar10', choices=sorted(sources.DATASETS))
  p.add_argument('--num', type=int, default=10_000, help='examples')
  p.add_argument('--out', required=True, help='the file (--shards=1) or folder to write')
  p.add_argument('--shards', type=int, default=1)
  p.add_argument('--format', default='npz', choices=('npz', 'array_record'))
  p.add_argument('--data_dir', default='', help="'' -> $TFDS_DATA_DIR or ~/tensorflow_datasets")
  p.add_argument('--seed', type=int, default=0)
  a = p.parse_args(argv)
  if a.shards == 1 and not a.out.endswith('.' + a.format):
    p.error(f'--out={a.out} must end with .{a.format} (or give --shards > 1 and a folder)')
  cfg = ml_collections.ConfigDict(dict(name=a.name, data_dir=a.data_dir, source_dir='',
                                       train_read='memory'))
  try:
    dataset = sources.load(cfg)
  except sources.DatasetUnavailableError as e:
    print(f'make_synthetic_extra: error: {e}', file=sys.stderr)
    return 2
  images, labels = extra.make_synthetic(dataset.train_images, dataset.train_labels, a.num,
                                        seed=a.seed)
  paths = write(a.out, images, labels, a.shards, a.format)
  print(f'{a.num} SYNTHETIC examples of {a.name} in {len(paths)} file(s): {a.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
