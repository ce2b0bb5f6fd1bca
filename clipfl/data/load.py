"""``load_dataset(name, data_dir)``: one entry point over every dataset and on-disk format.

The data directory defaults to ``$CLIPFL_DATA``. Each dataset's loader looks for the formats it
accepts inside that directory (or inside its ``<name>/`` subdirectory, the layout of
``../shared/data``) and raises a one-line ``DataError`` naming them when none is there.
"""

from __future__ import annotations

import os
from pathlib import Path

from clipfl.data.cache import CacheDir
from clipfl.data.types import Dataset
from clipfl.errors import DataError

__all__ = ["DATASETS", "FORMATS", "load_dataset", "resolve_data_dir"]

DATASETS: tuple[str, ...] = ("digits", "cifar10", "femnist", "shakespeare")
FORMATS: dict[str, tuple[str, ...]] = {
    "digits": ("embedded",),
    "cifar10": ("batches", "images"),
    "femnist": ("npz", "leaf"),
    "shakespeare": ("tff", "leaf"),
}


def _accepted(name: str) -> str:
    from clipfl.data import cifar, femnist, shakespeare

    return {"cifar10": cifar.ACCEPTED, "femnist": femnist.ACCEPTED, "shakespeare": shakespeare.ACCEPTED}[name]


def resolve_data_dir(name: str, data_dir: str | Path | None) -> Path:
    """``data_dir`` or ``$CLIPFL_DATA``, descending into ``<name>/`` when that subdirectory exists."""
    raw = data_dir if data_dir is not None else os.environ.get("CLIPFL_DATA")
    if raw is None or str(raw) == "":
        raise DataError(
            f"dataset {name!r} needs a data directory: pass --data-dir or set CLIPFL_DATA "
            f"(accepted: {_accepted(name)})"
        )
    root = Path(raw).expanduser()
    if not root.is_dir():
        if root.is_file():
            return root
        raise DataError(
            f"data directory {str(root)!r} for {name!r} does not exist; accepted: {_accepted(name)}"
        )
    sub = root / name
    return sub if sub.is_dir() else root


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    cache_dir: CacheDir = None,
    fmt: str | None = None,
) -> Dataset:
    """Load ``name`` (one of ``DATASETS``) from ``data_dir``; decoded sources are cached in ``cache_dir``.

    ``digits`` ships with scikit-learn and ignores the directories. ``cache_dir`` defaults to
    ``$CLIPFL_CACHE`` or ``~/.cache/clipfl``; ``False`` disables caching. ``fmt`` picks one format
    when the directory holds several (``FORMATS[name]``); by default the first in that order is used.
    """
    if name == "digits":
        from clipfl.data.digits import load_digits

        return load_digits()
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    where = resolve_data_dir(name, data_dir)
    if name == "cifar10":
        from clipfl.data.cifar import load_cifar10

        return load_cifar10(where, cache_dir=cache_dir, fmt=fmt)
    if name == "femnist":
        from clipfl.data.femnist import load_femnist

        return load_femnist(where, cache_dir=cache_dir, fmt=fmt)
    from clipfl.data.shakespeare import load_shakespeare

    return load_shakespeare(where, cache_dir=cache_dir, fmt=fmt)
