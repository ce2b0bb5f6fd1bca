"""CIFAR-10 from the formats people have: the official python batches, or an image-folder tree.

Accepted inside the data directory (or its ``cifar10/`` subdirectory):

* ``cifar-10-batches-py/`` (or the batch files themselves: ``data_batch_1..5``, ``test_batch``);
* ``cifar-10-python.tar.gz``, the official archive, read without extracting it;
* an image-folder tree ``{train,test}/<class>/*.jpg|png`` (directly, or one directory below), or a
  ``.tar.gz``/``.tgz`` of such a tree. Labels are the positions of the class folder names in sorted
  order (airplane=0 ... truck=9); images are taken in sorted file-name order within a class.

The official batches are pickles. They are read with an unpickler that only rebuilds NumPy arrays,
lists, dicts and scalars, so a hostile file cannot run code. Decoded arrays go through the cache.
"""

from __future__ import annotations

import io
import pickle
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from clipfl.data.cache import CacheDir, cached
from clipfl.data.types import ArraySplit, Dataset, Normalization
from clipfl.errors import DataError

__all__ = ["CIFAR10_CLASSES", "CIFAR10_NORM", "load_cifar10"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# The usual per-channel statistics of the CIFAR-10 train set (as in torchvision examples).
CIFAR10_NORM = Normalization(scale=1.0 / 255.0, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
_OFFICIAL_TAR = "cifar-10-python.tar.gz"
_IMAGE = re.compile(r"(?:^|.*/)(train|test)/([^/]+)/([^/]+\.(?:jpe?g|png))$", re.IGNORECASE)
ACCEPTED = (
    "cifar-10-batches-py/, cifar-10-python.tar.gz, an image tree {train,test}/<class>/*.jpg, "
    "or a .tar.gz of that tree"
)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds only NumPy arrays and plain containers: the official batches need nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(f: IO[bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        doc = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # pickle raises many types for damaged input
        raise DataError(f"CIFAR-10 batch {where!r} is truncated or not a CIFAR pickle ({exc})") from None
    if not isinstance(doc, dict):
        raise DataError(f"CIFAR-10 batch {where!r} is not a dict")
    data = doc.get(b"data", doc.get("data"))
    labels = doc.get(b"labels", doc.get("labels"))
    if data is None or labels is None:
        raise DataError(f"CIFAR-10 batch {where!r} lacks 'data' or 'labels'")
    x = np.asarray(data)
    y = np.asarray(labels)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
        raise DataError(
            f"CIFAR-10 batch {where!r} has data {x.shape} {x.dtype}, expected (N, 3072) uint8 and N labels"
        )
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"CIFAR-10 batch {where!r} has labels outside 0..9")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _from_batches(opener: Callable[[str], IO[bytes] | None], where: str) -> dict[str, np.ndarray]:
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in _BATCHES:
        f = opener(name)
        if f is None:
            raise DataError(f"CIFAR-10 batches in {where!r}: {name} is missing")
        with f:
            parts[name] = _read_batch(f, f"{where}/{name}")
    train = [parts[n] for n in _BATCHES[:-1]]
    return {
        "x_train": np.concatenate([p[0] for p in train]),
        "y_train": np.concatenate([p[1] for p in train]),
        "x_test": parts["test_batch"][0],
        "y_test": parts["test_batch"][1],
    }


def _batches_dir(d: Path) -> dict[str, np.ndarray]:
    def opener(name: str) -> IO[bytes] | None:
        p = d / name
        return p.open("rb") if p.is_file() else None

    return _from_batches(opener, str(d))


def _batches_tar(path: Path) -> dict[str, np.ndarray]:
    try:
        with tarfile.open(path, "r:*") as tf:
            members = {Path(m.name).name: m for m in tf.getmembers() if m.isfile()}

            def opener(name: str) -> IO[bytes] | None:
                m = members.get(name)
                return tf.extractfile(m) if m is not None else None

            return _from_batches(opener, str(path))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"CIFAR-10 archive {str(path)!r} is truncated or corrupt ({exc})") from None


def _decode_image(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"image {where!r} cannot be decoded ({exc})") from None
    if arr.shape != (32, 32, 3):
        raise DataError(f"image {where!r} is {arr.shape[1]}x{arr.shape[0]}, CIFAR-10 needs 32x32")
    return arr.transpose(2, 0, 1)


def _assemble(items: list[tuple[str, str, str, np.ndarray]], where: str) -> dict[str, np.ndarray]:
    """Sort (split, class, file, image) items and turn class names into labels."""
    classes = {s: sorted({c for sp, c, _, _ in items if sp == s}) for s in ("train", "test")}
    if not classes["train"] or not classes["test"]:
        raise DataError(f"no images in {where!r}: expected {{train,test}}/<class>/*.jpg")
    if classes["train"] != classes["test"]:
        raise DataError(
            f"train and test class folders differ in {where!r}: {classes['train']} vs {classes['test']}"
        )
    label = {c: i for i, c in enumerate(classes["train"])}
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        chosen = sorted((c, f, a) for sp, c, f, a in items if sp == split)
        out[f"x_{split}"] = np.stack([a for _, _, a in chosen])
        out[f"y_{split}"] = np.array([label[c] for c, _, _ in chosen], dtype=np.int64)
    out["classes"] = np.array(classes["train"])
    return out


def _tree_items(root: Path) -> Iterator[tuple[str, str, str, np.ndarray]]:
    for p in sorted(root.rglob("*")):
        m = _IMAGE.match(p.relative_to(root).as_posix())
        if m and p.is_file():
            yield m.group(1).lower(), m.group(2), m.group(3), _decode_image(p.read_bytes(), str(p))


def _images_dir(root: Path) -> dict[str, np.ndarray]:
    return _assemble(list(_tree_items(root)), str(root))


def _images_tar(path: Path) -> dict[str, np.ndarray]:
    items: list[tuple[str, str, str, np.ndarray]] = []
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                match = _IMAGE.match(m.name)
                if match is None or not m.isfile():
                    continue
                f = tf.extractfile(m)
                if f is None:
                    continue
                with f:
                    data = f.read()
                items.append(
                    (
                        match.group(1).lower(),
                        match.group(2),
                        match.group(3),
                        _decode_image(data, f"{path}:{m.name}"),
                    )
                )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"CIFAR-10 archive {str(path)!r} is truncated or corrupt ({exc})") from None
    return _assemble(items, str(path))


def _has_tree(d: Path) -> bool:
    return d.joinpath("train").is_dir() and d.joinpath("test").is_dir()


def _find(where: Path, fmt: str | None) -> tuple[str, Path]:
    """(format, source) found at ``where``; ``fmt`` ("batches" or "images") restricts the search."""
    found: list[tuple[str, Path]] = []
    if where.is_file():
        kind = "batches-tar" if where.name == _OFFICIAL_TAR else "images-tar"
        found.append((kind, where))
    elif where.is_dir():
        for d in (where / "cifar-10-batches-py", where):
            if d.joinpath("data_batch_1").is_file():
                found.append(("batches", d))
                break
        if where.joinpath(_OFFICIAL_TAR).is_file():
            found.append(("batches-tar", where / _OFFICIAL_TAR))
        subdirs = [d for d in sorted(where.iterdir()) if d.is_dir() and _has_tree(d)]
        if _has_tree(where):
            found.append(("images", where))
        elif subdirs:
            found.append(("images", subdirs[0]))
        tars = [
            p
            for p in sorted(where.iterdir())
            if p.name.endswith((".tar.gz", ".tgz")) and p.name != _OFFICIAL_TAR
        ]
        found += [("images-tar", p) for p in tars]
    if fmt is not None:
        if fmt not in ("batches", "images"):
            raise DataError(f"unknown CIFAR-10 format {fmt!r}; expected batches or images")
        found = [f for f in found if f[0].startswith(fmt)]
    if not found:
        raise DataError(f"no CIFAR-10 data in {str(where)!r}; accepted: {ACCEPTED}")
    return found[0]


def load_cifar10(where: Path, *, cache_dir: CacheDir = None, fmt: str | None = None) -> Dataset:
    """CIFAR-10 from the first accepted format found at ``where`` (batches before images)."""
    kind, src = _find(where, fmt)
    decoders: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
        "batches": _batches_dir,
        "batches-tar": _batches_tar,
        "images": _images_dir,
        "images-tar": _images_tar,
    }
    arrays = cached(f"cifar10-{kind}", [src], lambda: decoders[kind](src), cache_dir)
    classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else CIFAR10_CLASSES
    return Dataset(
        name="cifar10",
        train=ArraySplit(arrays["x_train"], arrays["y_train"], None, CIFAR10_NORM),
        test=ArraySplit(arrays["x_test"], arrays["y_test"], None, CIFAR10_NORM),
        num_classes=len(classes),
        input_shape=(3, 32, 32),
        natural_clients=None,
        source=f"{kind}:{src}",
        class_names=classes,
    )
