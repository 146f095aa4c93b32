"""Data: TFDS-backed in-memory datasets, additional (extra) training data, deterministic
batching, exact eval, augmentation."""

from robust_jax.data.augment import augment
from robust_jax.data.batching import host_batch
from robust_jax.data.batching import host_slice
from robust_jax.data.batching import steps_per_epoch
from robust_jax.data.batching import train_indices
from robust_jax.data.extra import ExtraDataError
from robust_jax.data.sources import DATASETS
from robust_jax.data.sources import READ_MODES
from robust_jax.data.sources import Dataset
from robust_jax.data.sources import DatasetUnavailableError
from robust_jax.data.sources import load
from robust_jax.data.sources import test_split

__all__ = ['DATASETS', 'READ_MODES', 'Dataset', 'DatasetUnavailableError', 'ExtraDataError',
           'augment', 'eval_batches', 'host_batch', 'host_slice', 'load', 'steps_per_epoch',
           'test_split', 'train_indices']
