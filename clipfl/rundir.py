"""The run directory: what a run leaves behind, written so that a crash loses nothing complete.

    config.json          the resolved configuration
    metrics.jsonl        the server's view, one JSON object per completed round
    client-<id>.jsonl    each client's own per-round record (written by the client process)
    summary.json         totals at the end of the run
    checkpoint.npz       the global model after the last completed round (atomic: temp file + rename)

JSON lines are appended and flushed line by line, so a reader (the launcher, a dashboard, a test)
never sees a half-written object; whole files are replaced atomically.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipfl.errors import ConfigError

__all__ = ["Checkpoint", "RunDir", "as_written", "atomic_write_bytes", "load_checkpoint", "read_jsonl"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(_jsonable(obj), allow_nan=False, **kw)


def as_written(obj: Any) -> Any:
    """``obj`` as a run directory's JSON file reads back (non-finite floats as None, NumPy scalars as
    Python's): what a record written now is compared with a record read from disk as."""
    return json.loads(_dumps(obj))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The complete JSON objects of a JSON-lines file (a torn last line is skipped)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n"):
                rows.append(json.loads(line))
    return rows


class RunDir:
    """One run's directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.npz"

    def client_path(self, client_id: int) -> Path:
        return self.path / f"client-{client_id}.jsonl"

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_bytes(self.path / name, (_dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def append_jsonl(self, path: Path, row: Mapping[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(_dumps(row) + "\n")
            fh.flush()

    def append_metrics(self, row: Mapping[str, Any]) -> None:
        self.append_jsonl(self.metrics_path, row)

    def append_client(self, client_id: int, row: Mapping[str, Any]) -> None:
        self.append_jsonl(self.client_path(client_id), row)

    def save_checkpoint(self, round: int, state: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        """Atomically replace the checkpoint with the global model after ``round``."""
        buffer = io.BytesIO()
        meta = np.frombuffer(_dumps({"round": round, **extra}).encode(), dtype=np.uint8)
        arrays: dict[str, Any] = {f"state/{k}": v for k, v in state.items()}
        np.savez(buffer, __meta__=meta, **arrays)
        atomic_write_bytes(self.checkpoint_path, buffer.getvalue())


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What ``--resume`` continues from: the model after ``round`` and everything the server kept."""

    round: int
    state: dict[str, np.ndarray]
    config: dict[str, Any]
    strategy: dict[str, Any]
    metrics_row: dict[str, Any]
    rows: list[dict[str, Any]]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a run directory for ``--resume``; raise ``ConfigError`` (one line) and change nothing."""
    root = Path(path)
    config_path, ckpt_path, metrics_path = (
        root / "config.json",
        root / "checkpoint.npz",
        root / "metrics.jsonl",
    )
    if not root.is_dir():
        raise ConfigError(f"--resume {root}: no such directory")
    if not config_path.is_file() or not ckpt_path.is_file():
        raise ConfigError(
            f"--resume {root}: not a clipfl run directory (needs config.json and checkpoint.npz)"
        )
    try:
        config = json.loads(config_path.read_text())
        with np.load(ckpt_path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            state = {
                k.removeprefix("state/"): np.array(data[k]) for k in data.files if k.startswith("state/")
            }
        rows = read_jsonl(metrics_path) if metrics_path.is_file() else []
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(
            f"--resume {root}: damaged run directory ({exc.__class__.__name__}: {exc})"
        ) from None
    if not isinstance(config, dict) or not isinstance(meta, dict) or not isinstance(meta.get("round"), int):
        raise ConfigError(f"--resume {root}: config.json or the checkpoint's metadata is not a clipfl one")
    return Checkpoint(
        round=meta["round"],
        state=state,
        config=config,
        strategy=dict(meta.get("strategy") or {}),
        metrics_row=dict(meta.get("metrics") or {}),
        rows=[r for r in rows if isinstance(r.get("round"), int) and r["round"] <= meta["round"]],
    )
