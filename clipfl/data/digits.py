"""The embedded default dataset: scikit-learn's bundled handwritten digits (no download, no files).

1,797 real 8x8 images with values 0..16, ten classes. The held-out test split is a stratified 20 %
chosen by a fixed NumPy seed (not scikit-learn's splitter), so that it is identical on every machine
and every scikit-learn version that ships the same data.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from clipfl.data.types import ArraySplit, Dataset, Normalization

__all__ = ["DIGITS_SPLIT_SEED", "DIGITS_TEST_FRACTION", "load_digits"]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20240601  # any fixed value; changing it changes every digits result


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test index arrays with ``round(fraction * n_c)`` test samples of each class."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = round(fraction * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits from the CSV file scikit-learn ships, read without importing scikit-learn.

    Importing ``sklearn.datasets`` costs about 0.75 s of CPU, paid by every client process of a
    federation on a 2-core machine; the file itself parses in milliseconds. If the file is not where
    scikit-learn keeps it, scikit-learn's own loader is used.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",", dtype=np.float64)
            return table[:, :-1], table[:, -1]
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return bunch.data, bunch.target


def load_digits() -> Dataset:
    """scikit-learn's digits as uint8 ``(N, 1, 8, 8)`` images, 80/20 stratified train/test."""
    data, target = _bundled_digits()
    x = np.asarray(data, dtype=np.uint8).reshape(-1, 1, 8, 8)
    y = np.asarray(target, dtype=np.int64)
    tr, te = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    # Mean and std of the whole pixel set on the [0, 1] scale (values / 16); fixed constants keep the
    # normalisation independent of the split.
    norm = Normalization(scale=1.0 / 16.0, mean=(0.3053,), std=(0.3760,))
    return Dataset(
        name="digits",
        train=ArraySplit(x[tr], y[tr], None, norm),
        test=ArraySplit(x[te], y[te], None, norm),
        num_classes=10,
        input_shape=(1, 8, 8),
        natural_clients=None,
    )
