"""Shakespeare next-character prediction (LEAF's task), one natural client per play-and-role.

Accepted inside the data directory (or its ``shakespeare/`` subdirectory), in this order:

* TensorFlow Federated's HDF5 pair ``*train*.h5`` / ``*test*.h5``: ``/examples/<role>/snippets``,
  variable-length UTF-8 byte strings. A role's text is rebuilt exactly as LEAF's preprocessing does
  it (``_write_data_by_character`` then ``txt_to_data``): its snippets each followed by a newline,
  newlines turned into spaces, runs of two or more spaces collapsed to one. Every 80-character window
  of that text is a sample whose label is the character that follows it, so a role with text of
  length L gives ``max(0, L - 80)`` samples;
* a LEAF JSON directory (``train/*.json``, ``test/*.json``) whose ``x`` items are those 80-character
  windows and ``y`` the next characters, as LEAF writes them.

Characters are ids in LEAF's 80-symbol vocabulary ``LEAF_VOCAB``; anything else maps to the reserved
id ``UNKNOWN`` = 80, so models have 81 outputs. Group index = role, in the train file's order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from clipfl.data.cache import CacheDir, cached
from clipfl.data.leaf import LeafUser, is_leaf_dir, read_leaf_split
from clipfl.data.types import ArraySplit, Dataset
from clipfl.errors import DataError

__all__ = ["LEAF_VOCAB", "SEQ_LEN", "UNKNOWN", "encode", "leaf_text", "load_shakespeare", "windows"]

LEAF_VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
UNKNOWN = len(LEAF_VOCAB)  # 80: the reserved id of every character outside the vocabulary
SEQ_LEN = 80
ACCEPTED = "TFF HDF5 files *train*.h5 and *test*.h5, or a LEAF directory with train/*.json and test/*.json"

_LUT = np.full(0x110000, UNKNOWN, dtype=np.uint8)  # code point -> id (1.1 MB, built once)
_LUT[[ord(c) for c in LEAF_VOCAB]] = np.arange(len(LEAF_VOCAB), dtype=np.uint8)
_SPACES = re.compile(r"   *")  # LEAF's own pattern: two or more spaces


def encode(text: str) -> np.ndarray:
    """Token ids (uint8) of ``text``; characters outside ``LEAF_VOCAB`` become ``UNKNOWN``."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return _LUT[codes]


def leaf_text(snippets: list[str]) -> str:
    """A role's text as LEAF builds it from its lines (see the module docstring)."""
    return _SPACES.sub(" ", "".join(s + "\n" for s in snippets).replace("\n", " "))


def windows(tokens: np.ndarray, seq_len: int = SEQ_LEN) -> tuple[np.ndarray, np.ndarray]:
    """Every ``seq_len`` window of ``tokens`` and the token after it (LEAF's ``txt_to_data``)."""
    n = max(0, len(tokens) - seq_len)
    if n == 0:
        return np.zeros((0, seq_len), np.uint8), np.zeros(0, np.uint8)
    view = np.lib.stride_tricks.sliding_window_view(tokens, seq_len)[:n]
    return np.ascontiguousarray(view), tokens[seq_len:].copy()


def _stack(parts: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros((0, SEQ_LEN), np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.int32)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    g = np.concatenate([np.full(len(p[1]), p[2], dtype=np.int32) for p in parts])
    return x, y, g


def _read_h5(path: Path) -> dict[str, list[str]]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "examples" not in f:
                raise DataError(f"TFF Shakespeare file {str(path)!r} has no /examples group")
            out: dict[str, list[str]] = {}
            for role, group in f["examples"].items():
                if "snippets" not in group:
                    raise DataError(f"TFF Shakespeare file {str(path)!r}: /examples/{role} has no snippets")
                raw = group["snippets"][()]
                out[role] = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in raw]
            return out
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"TFF Shakespeare file {str(path)!r} is truncated or corrupt ({exc})") from None


def _from_tff(train_path: Path, test_path: Path) -> dict[str, np.ndarray]:
    train = _read_h5(train_path)
    test = _read_h5(test_path)
    roles = list(train) + [r for r in test if r not in train]
    index = {r: i for i, r in enumerate(roles)}
    out: dict[str, np.ndarray] = {"roles": np.array(roles), "n_train_roles": np.array(len(train))}
    for split, data in (("train", train), ("test", test)):
        parts = [(*windows(encode(leaf_text(snips))), index[role]) for role, snips in data.items()]
        out[f"x_{split}"], out[f"y_{split}"], out[f"g_{split}"] = _stack(parts)
    return out


def _leaf_arrays(
    users: list[LeafUser], index: dict[str, int], where: str
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    parts = []
    for u in users:
        if not all(isinstance(s, str) and len(s) == SEQ_LEN for s in u.x):
            raise DataError(
                f"Shakespeare LEAF {where!r}: role {u.user!r} has x items that are not 80-character strings"
            )
        if not all(isinstance(c, str) and len(c) == 1 for c in u.y):
            raise DataError(
                f"Shakespeare LEAF {where!r}: role {u.user!r} has y items that are not single characters"
            )
        x = encode("".join(u.x)).reshape(-1, SEQ_LEN)
        y = encode("".join(u.y))
        parts.append((x, y, index.setdefault(u.user, len(index))))
    return parts


def _from_leaf(root: Path) -> dict[str, np.ndarray]:
    index: dict[str, int] = {}
    train = _leaf_arrays(read_leaf_split(root, "train"), index, str(root))
    n_train_roles = len(index)
    test = _leaf_arrays(read_leaf_split(root, "test"), index, str(root))
    out: dict[str, np.ndarray] = {
        "roles": np.array(sorted(index, key=index.__getitem__)),
        "n_train_roles": np.array(n_train_roles),
    }
    for split, parts in (("train", train), ("test", test)):
        out[f"x_{split}"], out[f"y_{split}"], out[f"g_{split}"] = _stack(parts)
    return out


def _find(where: Path, fmt: str | None) -> tuple[str, list[Path]]:
    found: list[tuple[str, list[Path]]] = []
    if where.is_dir():
        trains = sorted(where.glob("*train*.h5"))
        tests = sorted(where.glob("*test*.h5"))
        if trains and tests:
            found.append(("tff", [trains[0], tests[0]]))
        found += [("leaf", [d]) for d in (where, where / "leaf-json") if d.is_dir() and is_leaf_dir(d)]
    if fmt is not None:
        if fmt not in ("tff", "leaf"):
            raise DataError(f"unknown Shakespeare format {fmt!r}; expected tff or leaf")
        found = [f for f in found if f[0] == fmt]
    if not found:
        raise DataError(f"no Shakespeare data in {str(where)!r}; accepted: {ACCEPTED}")
    return found[0]


def load_shakespeare(where: Path, *, cache_dir: CacheDir = None, fmt: str | None = None) -> Dataset:
    """Shakespeare from the TFF HDF5 pair (preferred) or LEAF JSON at ``where``; groups are roles."""
    kind, srcs = _find(where, fmt)
    build = (lambda: _from_tff(srcs[0], srcs[1])) if kind == "tff" else (lambda: _from_leaf(srcs[0]))
    a = cached(f"shakespeare-{kind}", srcs, build, cache_dir)
    return Dataset(
        name="shakespeare",
        train=ArraySplit(a["x_train"], a["y_train"], a["g_train"], None),
        test=ArraySplit(a["x_test"], a["y_test"], a["g_test"], None),
        num_classes=UNKNOWN + 1,
        input_shape=(SEQ_LEN,),
        natural_clients=int(a["n_train_roles"]),
        vocab=LEAF_VOCAB,
        group_names=tuple(str(r) for r in a["roles"]),
        source=f"{kind}:{','.join(str(s) for s in srcs)}",
    )
