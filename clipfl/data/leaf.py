"""Reading LEAF's JSON shards, the format its preprocessing scripts write for FEMNIST and Shakespeare.

A LEAF dataset directory holds ``train/*.json`` and ``test/*.json``; each file is
``{"users": [id, ...], "num_samples": [n, ...], "user_data": {id: {"x": [...], "y": [...]}}}``.
Files are read in sorted name order and users in each file's ``users`` order, so sample order (and
hence every partition) is the same on every machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipfl.errors import DataError

__all__ = ["LeafUser", "is_leaf_dir", "read_leaf_split"]


@dataclass(frozen=True, slots=True)
class LeafUser:
    """One user's (writer's, role's) samples from one split, as LEAF stores them."""

    user: str
    x: list[Any]
    y: list[Any]


def is_leaf_dir(path: Path) -> bool:
    """Whether ``path`` has LEAF's ``train/*.json`` and ``test/*.json`` layout."""
    return all(path.joinpath(s).is_dir() and any(path.joinpath(s).glob("*.json")) for s in ("train", "test"))


def _read_file(path: Path) -> list[LeafUser]:
    try:
        with path.open("rb") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"LEAF file {str(path)!r} is truncated or not JSON ({type(exc).__name__})") from None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("users"), list)
        or not isinstance(doc.get("user_data"), dict)
    ):
        raise DataError(f"LEAF file {str(path)!r} lacks the 'users' list and 'user_data' object")
    out: list[LeafUser] = []
    for user in doc["users"]:
        data = doc["user_data"].get(user)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("x"), list)
            or not isinstance(data.get("y"), list)
        ):
            raise DataError(f"LEAF file {str(path)!r}: user {user!r} has no 'x' and 'y' lists")
        if len(data["x"]) != len(data["y"]):
            raise DataError(
                f"LEAF file {str(path)!r}: user {user!r} has {len(data['x'])} x but {len(data['y'])} y"
            )
        out.append(LeafUser(str(user), data["x"], data["y"]))
    return out


def read_leaf_split(root: Path, split: str) -> list[LeafUser]:
    """Every user of ``root/split/*.json``, in sorted file order; a user split across shards is merged."""
    files = sorted(root.joinpath(split).glob("*.json"))
    if not files:
        raise DataError(f"LEAF directory {str(root)!r} has no {split}/*.json files")
    merged: dict[str, LeafUser] = {}
    for path in files:
        for u in _read_file(path):
            if u.user in merged:
                merged[u.user].x.extend(u.x)
                merged[u.user].y.extend(u.y)
            else:
                merged[u.user] = u
    return list(merged.values())
