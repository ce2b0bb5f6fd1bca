"""Federated partitions of a train split: ``iid``, ``dirichlet`` label skew, and ``natural`` (by writer/role).

Every scheme is a pure function of (labels or groups, number of clients, seed): the same call gives the
same index arrays on every machine, which is what lets N client processes each compute their own
share without talking to each other. Index arrays are sorted int64 positions into the train split.

The Dirichlet scheme follows the usual label-skew recipe (Hsu et al. 2019, as in FedLab/NIID-Bench):
for each class draw client proportions from Dir(alpha) and cut that class's shuffled indices
accordingly; redraw (with the next seed from the same generator) until every client has at least
``min_samples``, and give up with a ``DataError`` after a bounded number of attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from clipfl.data.types import ArraySplit, Dataset
from clipfl.errors import DataError

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "SCHEMES",
    "Partition",
    "Scheme",
    "make_partition",
    "partition",
    "partition_stats",
    "subsample",
]

Scheme = Literal["iid", "dirichlet", "natural"]
SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "natural")
DEFAULT_MIN_SAMPLES = 10  # one mini-batch of the smallest preset: below it a client's update is noise
DIRICHLET_ATTEMPTS = 100


@dataclass(frozen=True, slots=True, eq=False)
class Partition:
    """Per-client index arrays into the train split, and into the test split where the data has one.

    ``test`` is set by the natural scheme when the test split carries the same writers/roles (the
    client's local test split); ``groups`` names the writer/role index each client was given.
    """

    scheme: str
    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...] | None = None
    groups: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.train)


def _check(n_clients: int, min_samples: int, alpha: float) -> None:
    if n_clients < 1:
        raise DataError(f"number of clients must be at least 1, got {n_clients}")
    if min_samples < 1:
        raise DataError(f"min_samples must be at least 1, got {min_samples}")
    if not alpha > 0:
        raise DataError(f"Dirichlet alpha must be positive, got {alpha}")


def _iid(n: int, n_clients: int, rng: np.random.Generator, min_samples: int) -> list[np.ndarray]:
    if n < n_clients * min_samples:
        raise DataError(
            f"iid partition: {n} samples cannot give {n_clients} clients {min_samples} each; "
            "use fewer clients or a smaller --min-samples"
        )
    return [np.sort(p) for p in np.array_split(rng.permutation(n), n_clients)]


def _dirichlet(
    y: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator, min_samples: int
) -> list[np.ndarray]:
    n = len(y)
    if n < n_clients * min_samples:
        raise DataError(
            f"dirichlet partition: {n} samples cannot give {n_clients} clients {min_samples} each; "
            "use fewer clients or a smaller --min-samples"
        )
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    for _ in range(DIRICHLET_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            p = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(np.int64)
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_samples:
            return out
    raise DataError(
        f"dirichlet partition: no draw in {DIRICHLET_ATTEMPTS} attempts gave all {n_clients} clients "
        f"{min_samples} samples at alpha={alpha}; raise alpha, use fewer clients or a smaller --min-samples"
    )


def _natural(
    train: ArraySplit,
    test: ArraySplit | None,
    n_clients: int,
    rng: np.random.Generator,
    min_samples: int,
    pick: str,
) -> Partition:
    if train.groups is None:
        raise DataError("natural partition: this dataset has no writers or roles; use iid or dirichlet")
    n_groups = int(train.groups.max()) + 1 if len(train.groups) else 0
    order = np.argsort(train.groups, kind="stable")
    counts = np.bincount(train.groups, minlength=n_groups)
    members = np.split(order, np.cumsum(counts)[:-1]) if n_groups else []
    eligible = np.flatnonzero(counts >= min_samples)
    if len(eligible) < n_clients:
        raise DataError(
            f"natural partition: only {len(eligible)} of {n_groups} writers/roles have at least "
            f"{min_samples} train samples, {n_clients} clients asked; "
            "use fewer clients or a smaller --min-samples"
        )
    if pick == "largest":
        # Largest first; ties broken by group index so the choice is total and machine-independent.
        chosen = sorted(eligible.tolist(), key=lambda g: (-int(counts[g]), g))[:n_clients]
    elif pick == "sample":
        chosen = sorted(rng.choice(eligible, size=n_clients, replace=False).tolist())
    else:
        raise DataError(f"natural partition: pick must be 'largest' or 'sample', got {pick!r}")
    train_idx = tuple(np.sort(members[g]) for g in chosen)
    test_idx: tuple[np.ndarray, ...] | None = None
    if test is not None and test.groups is not None:
        test_idx = tuple(np.flatnonzero(test.groups == g) for g in chosen)
    return Partition("natural", train_idx, test_idx, tuple(int(g) for g in chosen))


def make_partition(
    data: Dataset | ArraySplit,
    scheme: str,
    n_clients: int,
    *,
    seed: int = 0,
    alpha: float = 0.5,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    pick: str = "largest",
) -> Partition:
    """Split ``data``'s train split among ``n_clients``; see the module docstring for the schemes.

    ``pick`` chooses the writers/roles of the natural scheme: the ``"largest"`` N, or a seeded
    ``"sample"`` of N among those with at least ``min_samples``. Raises ``DataError`` when the
    partition cannot give every client ``min_samples`` train samples.
    """
    _check(n_clients, min_samples, alpha)
    train = data.train if isinstance(data, Dataset) else data
    test = data.test if isinstance(data, Dataset) else None
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return Partition("iid", tuple(_iid(len(train), n_clients, rng, min_samples)))
    if scheme == "dirichlet":
        return Partition("dirichlet", tuple(_dirichlet(train.y, n_clients, alpha, rng, min_samples)))
    if scheme == "natural":
        return _natural(train, test, n_clients, rng, min_samples, pick)
    raise DataError(f"unknown partition scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def partition(
    data: Dataset | ArraySplit,
    scheme: str,
    n_clients: int,
    *,
    seed: int = 0,
    alpha: float = 0.5,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    pick: str = "largest",
) -> list[np.ndarray]:
    """The train index arrays of ``make_partition`` (one sorted int64 array per client)."""
    part = make_partition(data, scheme, n_clients, seed=seed, alpha=alpha, min_samples=min_samples, pick=pick)
    return list(part.train)


def subsample(indices: np.ndarray, max_samples: int | None, *, seed: int) -> np.ndarray:
    """At most ``max_samples`` of ``indices``: a seeded uniform choice, kept in sorted order.

    What a preset's ``max_client_samples`` and ``max_test_samples`` apply: it bounds a client's local
    epoch (Shakespeare's largest roles have 68,000 windows) and the server's evaluation (284,498
    test windows) on a CPU, while staying a fixed, reproducible subset.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if max_samples is None or len(idx) <= max_samples:
        return idx
    if max_samples < 1:
        raise DataError(f"max_samples must be at least 1, got {max_samples}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(idx, size=max_samples, replace=False))


def partition_stats(part: Partition) -> dict[str, float]:
    """Samples per client: min, median, max and total (what ``python -m clipfl.data`` prints)."""
    sizes = np.array([len(p) for p in part.train], dtype=np.int64)
    return {
        "clients": len(sizes),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "max": int(sizes.max()),
        "total": int(sizes.sum()),
    }
