r"""Prepares a dataset as TFDS array_record files and prints where they are.

  python -m robust_jax.data.prepare --name=fashion_mnist [--data_dir=DIR] [--source_dir=DIR]

Exits with status 2 and a message saying what to do if the dataset cannot be had here.
"""

import argparse
import sys

from robust_jax.data import sources


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--name', default='fashion_mnist', choices=sorted(sources.DATASETS))
  parser.add_argument('--data_dir', default='',
                      help="'' -> $TFDS_DATA_DIR or ~/tensorflow_datasets")
  parser.add_argument('--source_dir', default='',
                      help="folder of IDX files (cifar10: its files); '' -> the default")
  args = parser.parse_args(argv)
  try:
    builder = sources.prepare(args.name, args.data_dir, args.source_dir)
  except sources.DatasetUnavailableError as e:
    print(f'robust_jax.data.prepare: error: {e}', file=sys.stderr)
    return 2
  print(builder.data_dir)
  return 0


if __name__ == '__main__':
  sys.exit(main())
