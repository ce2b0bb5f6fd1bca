"""FEMNIST (LEAF's federated EMNIST: 62 classes, one natural client per writer).

Accepted inside the data directory (or its ``femnist/`` subdirectory), in this order of preference:

* an ``.npz`` with ``x_train``/``x_test`` uint8 ``(N, 28, 28)`` (255 = white background),
  ``y_train``/``y_test`` in 0..61, ``writer_train``/``writer_test`` indexes into ``writers``
  (the layout of ``femnist_leaf_union_300w.npz``);
* a LEAF JSON directory (``train/*.json``, ``test/*.json``; directly or under ``leaf-json/``), whose
  ``x`` rows are 784 floats in [0, 1] with 1.0 = white; they are stored as ``round(255 * x)`` so that
  both formats give the same uint8 pixels.

Samples keep their writer as the group index (writers numbered in order of first appearance in the
train split), so the natural partition gives each client one writer with its own local test split.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from clipfl.data.cache import CacheDir, cached
from clipfl.data.leaf import LeafUser, is_leaf_dir, read_leaf_split
from clipfl.data.types import ArraySplit, Dataset, Normalization
from clipfl.errors import DataError

__all__ = ["FEMNIST_CLASSES", "FEMNIST_NORM", "load_femnist"]

FEMNIST_CLASSES = 62  # digits, then A-Z, then a-z
# Pixel mean and std of the 300-writer union's train split on the [0, 1] scale (mostly white paper).
FEMNIST_NORM = Normalization(scale=1.0 / 255.0, mean=(0.9615,), std=(0.1642,))
_NPZ_KEYS = ("x_train", "y_train", "writer_train", "x_test", "y_test", "writer_test", "writers")
ACCEPTED = (
    "an .npz with x_train/y_train/writer_train/... or a LEAF directory with train/*.json and test/*.json"
)


def _check_split(x: np.ndarray, y: np.ndarray, g: np.ndarray, n_writers: int, where: str, split: str) -> None:
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"FEMNIST {where!r}: x_{split} is {x.shape} {x.dtype}, expected (N, 28, 28) uint8")
    if len(y) != len(x) or len(g) != len(x):
        raise DataError(f"FEMNIST {where!r}: x_{split}, y_{split} and writer_{split} differ in length")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= FEMNIST_CLASSES):
        raise DataError(f"FEMNIST {where!r}: y_{split} has labels outside 0..61")
    if len(g) and (int(g.min()) < 0 or int(g.max()) >= n_writers):
        raise DataError(f"FEMNIST {where!r}: writer_{split} indexes past the {n_writers} writers")


def _from_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with path.open("rb") as f, np.load(f, allow_pickle=False) as z:  # our handle: closed even on error
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"FEMNIST npz {str(path)!r} lacks {', '.join(missing)}")
            a = {k: z[k] for k in _NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"FEMNIST npz {str(path)!r} is truncated or corrupt ({exc})") from None
    n_writers = len(a["writers"])
    for split in ("train", "test"):
        _check_split(a[f"x_{split}"], a[f"y_{split}"], a[f"writer_{split}"], n_writers, str(path), split)
    return {
        "x_train": a["x_train"][:, None],
        "y_train": a["y_train"].astype(np.int16),
        "g_train": a["writer_train"].astype(np.int32),
        "x_test": a["x_test"][:, None],
        "y_test": a["y_test"].astype(np.int16),
        "g_test": a["writer_test"].astype(np.int32),
        "writers": a["writers"].astype(str),
    }


def _leaf_arrays(users: list[LeafUser], index: dict[str, int], where: str) -> tuple[np.ndarray, ...]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    gs: list[np.ndarray] = []
    for u in users:
        try:
            x = np.asarray(u.x, dtype=np.float32)
            y = np.asarray(u.y, dtype=np.int64)
        except (ValueError, TypeError):
            raise DataError(f"FEMNIST LEAF {where!r}: writer {u.user!r} has non-numeric samples") from None
        if len(x) and (x.ndim != 2 or x.shape[1] != 784):
            raise DataError(
                f"FEMNIST LEAF {where!r}: writer {u.user!r} has rows of {x.shape[1:]}, expected 784"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= FEMNIST_CLASSES):
            raise DataError(f"FEMNIST LEAF {where!r}: writer {u.user!r} has labels outside 0..61")
        xs.append(np.clip(np.rint(x.reshape(-1, 1, 28, 28) * 255.0), 0, 255).astype(np.uint8))
        ys.append(y.astype(np.int16))
        gs.append(np.full(len(y), index.setdefault(u.user, len(index)), dtype=np.int32))
    if not xs:
        return np.zeros((0, 1, 28, 28), np.uint8), np.zeros(0, np.int16), np.zeros(0, np.int32)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def _from_leaf(root: Path) -> dict[str, np.ndarray]:
    index: dict[str, int] = {}
    x_tr, y_tr, g_tr = _leaf_arrays(read_leaf_split(root, "train"), index, str(root))
    x_te, y_te, g_te = _leaf_arrays(read_leaf_split(root, "test"), index, str(root))
    writers = np.array(sorted(index, key=index.__getitem__))
    return {
        "x_train": x_tr,
        "y_train": y_tr,
        "g_train": g_tr,
        "x_test": x_te,
        "y_test": y_te,
        "g_test": g_te,
        "writers": writers,
    }


def _find(where: Path, fmt: str | None) -> tuple[str, Path]:
    found: list[tuple[str, Path]] = []
    if where.is_file() and where.suffix == ".npz":
        found.append(("npz", where))
    elif where.is_dir():
        found += [("npz", p) for p in sorted(where.glob("*.npz"))]
        found += [("leaf", d) for d in (where, where / "leaf-json") if d.is_dir() and is_leaf_dir(d)]
    if fmt is not None:
        if fmt not in ("npz", "leaf"):
            raise DataError(f"unknown FEMNIST format {fmt!r}; expected npz or leaf")
        found = [f for f in found if f[0] == fmt]
    if not found:
        raise DataError(f"no FEMNIST data in {str(where)!r}; accepted: {ACCEPTED}")
    return found[0]


def load_femnist(where: Path, *, cache_dir: CacheDir = None, fmt: str | None = None) -> Dataset:
    """FEMNIST from the npz (preferred) or LEAF JSON found at ``where``; groups are writers."""
    kind, src = _find(where, fmt)
    build = (lambda: _from_npz(src)) if kind == "npz" else (lambda: _from_leaf(src))
    a = cached(f"femnist-{kind}", [src], build, cache_dir)
    return Dataset(
        name="femnist",
        train=ArraySplit(a["x_train"], a["y_train"], a["g_train"], FEMNIST_NORM),
        test=ArraySplit(a["x_test"], a["y_test"], a["g_test"], FEMNIST_NORM),
        num_classes=FEMNIST_CLASSES,
        input_shape=(1, 28, 28),
        natural_clients=len(np.unique(a["g_train"])),
        group_names=tuple(str(w) for w in a["writers"]),
        source=f"{kind}:{src}",
    )
