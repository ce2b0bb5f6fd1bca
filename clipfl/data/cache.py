"""Decode a dataset source once; later starts map the decoded arrays straight from disk.

A 20-client run starts 21 processes that each need the same decoded arrays; decoding 60,000 JPEGs
in each would take minutes on two cores. ``cached`` stores the decoder's arrays in an *uncompressed*
``.npz`` named after a hash of the source, and loads it back as read-only ``np.memmap`` views of the
zip members, so every process shares one copy through the page cache and a start costs milliseconds.

The hash covers the decoder's name and version and the source: the content (SHA-256) of source
files, and the path, size and modification time of every file under a source directory (hashing
gigabytes of extracted images on every start would defeat the cache). A changed source gives a new
name, so the old entry is never read again; it is deleted when the new one is written. Concurrent
first starts take an exclusive ``flock`` so that one process decodes while the others wait for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clipfl.errors import DataError

__all__ = ["CacheDir", "cache_root", "cached", "fingerprint", "load_npz_mapped", "save_npz"]

CacheDir = str | Path | bool | None
"""``None``: ``$CLIPFL_CACHE`` or ``~/.cache/clipfl``; ``False`` or ``""``: no cache; else the directory."""

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header (APPNOTE 4.3.7), 30 bytes
_CHUNK = 1 << 20
_SMALL = 1 << 16  # members below this size are read, not mapped


def cache_root(cache_dir: CacheDir) -> Path | None:
    """The cache directory to use, or ``None`` when caching is off."""
    if cache_dir is False or cache_dir == "":
        return None
    if cache_dir is None or cache_dir is True:
        env = os.environ.get("CLIPFL_CACHE")
        return Path(env).expanduser() if env else Path.home() / ".cache" / "clipfl"
    return Path(cache_dir).expanduser()


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def fingerprint(sources: Sequence[Path], salt: str) -> str:
    """Hex SHA-256 of ``salt`` and the sources (content of files, stat of the files under directories)."""
    h = hashlib.sha256(salt.encode())
    for src in sources:
        if src.is_dir():
            for p in sorted(q for q in src.rglob("*") if q.is_file()):
                st = p.stat()
                h.update(f"\0{p.relative_to(src).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        else:
            h.update(f"\0file\0{src.name}\0".encode())
            _hash_file(h, src)
    return h.hexdigest()


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` atomically (temporary file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            members: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
            np.savez(f, **members)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the cache is as shareable as any file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_npz_mapped(path: Path) -> dict[str, np.ndarray]:
    """Every member of an uncompressed ``.npz`` as a read-only memory map (no bytes copied)."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, path.open("rb") as raw:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                raise DataError(f"cache file {str(path)!r} is not an uncompressed npz; delete it")
            raw.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            if fields[0] != b"PK\x03\x04":
                raise DataError(f"cache file {str(path)!r} is corrupt; delete it")
            raw.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
            major, _ = np.lib.format.read_magic(raw)
            read_header = (
                np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(raw)
            if dtype.hasobject:
                raise DataError(f"cache file {str(path)!r} holds objects; delete it")
            name = info.filename[: -len(".npy")]
            order: Literal["C", "F"] = "F" if fortran else "C"
            nbytes = int(np.prod(shape)) * dtype.itemsize
            if nbytes < _SMALL:  # scalars and tiny arrays: a read is cheaper than a mapping
                data = raw.read(nbytes)
                if len(data) != nbytes:
                    raise DataError(f"cache file {str(path)!r} is truncated; delete it")
                out[name] = np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy(order="K")
                continue
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=raw.tell(), shape=shape, order=order)
    return out


def cached(
    key: str,
    sources: Sequence[Path],
    build: Callable[[], dict[str, np.ndarray]],
    cache_dir: CacheDir,
    *,
    version: int = 1,
) -> dict[str, np.ndarray]:
    """``build()``'s arrays, from the cache when a fresh entry for ``sources`` exists.

    ``key`` names the decoder (``"cifar10-images"``); bump ``version`` when its output changes.
    Without a cache directory this is just ``build()``.
    """
    root = cache_root(cache_dir)
    if root is None:
        return build()
    digest = fingerprint(sources, f"{key}:v{version}")[:20]
    path = root / f"{key}-{digest}.npz"
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = (root / f"{key}.lock").open("a")
    except OSError as exc:
        raise DataError(
            f"cache directory {str(root)!r} is not usable ({exc.strerror}); "
            "pass another --cache-dir or --no-cache"
        ) from None
    with lock:  # closing the file releases the flock
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            try:
                return load_npz_mapped(path)
            except (OSError, ValueError, zipfile.BadZipFile, DataError):
                path.unlink(missing_ok=True)  # a damaged entry is rebuilt, not trusted
        arrays = build()
        try:
            save_npz(path, arrays)
        except OSError as exc:
            raise DataError(
                f"cannot write the cache {str(path)!r} ({exc.strerror}); try --no-cache"
            ) from None
        for stale in root.glob(f"{key}-*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
        return load_npz_mapped(path)
