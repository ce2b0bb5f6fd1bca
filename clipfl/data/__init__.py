"""Datasets, their on-disk formats, and federated partitions.

    load_dataset(name, data_dir)    -> Dataset (train/test ArraySplit of compact NumPy arrays)
    partition(dataset, scheme, n)   -> one sorted index array into the train split per client
    make_partition(...)             -> the same plus per-client local test indices (natural scheme)
    to_tensors(split, indices)      -> (x, y) torch tensors for one client, built in one step
    subsample(indices, n, seed=)    -> a fixed seeded subset (a preset's per-client and test caps)

``python -m clipfl.data --dataset NAME --data-dir DIR --partition P --clients N [--json]`` prints
a dataset's and a partition's statistics.
"""

from __future__ import annotations

from clipfl.data.load import DATASETS, load_dataset
from clipfl.data.partition import (
    DEFAULT_MIN_SAMPLES,
    SCHEMES,
    Partition,
    make_partition,
    partition,
    partition_stats,
    subsample,
)
from clipfl.data.types import ArraySplit, Dataset, Normalization, to_tensors

__all__ = [
    "DATASETS",
    "DEFAULT_MIN_SAMPLES",
    "SCHEMES",
    "ArraySplit",
    "Dataset",
    "Normalization",
    "Partition",
    "load_dataset",
    "make_partition",
    "partition",
    "partition_stats",
    "subsample",
    "to_tensors",
]
