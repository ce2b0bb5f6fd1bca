"""Which units a straggler drops: invariant (CLIP, FLuID), random (Federated Dropout), ordered (FjORD).

All strategies share one count rule so that they differ only in *which* units go: a keep ratio ``p``
drops ``round_half_up((1 - p) * size)`` units of every prunable layer, and always keeps at least one.
Equal layer sizes get equal counts, which the LSTM needs (``nn.LSTM`` has one hidden size for all
its layers).

Invariant selection (DESIGN section 5.4) fills the drop set per layer in this order:

1. *sticky*: units dropped last round that are still invariant (the sub-model changes little from
   round to round, and those units stay stale the fewest rounds);
2. other invariant units, by ascending score (ties by index);
3. random units from the rest, from the injected generator.

A unit is invariant when its score is at or below the threshold. ``ThresholdCalibrator`` sets the
threshold the FLuID way: start at the smallest unit score seen in the first rounds, then raise it in
multiplicative steps until enough units qualify.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipfl.clip.units import UnitLayout

__all__ = [
    "Selection",
    "ThresholdCalibrator",
    "drop_count",
    "kept_counts",
    "select_invariant",
    "select_ordered",
    "select_random",
]


def drop_count(size: int, keep_ratio: float) -> int:
    """Units to drop from a layer of ``size`` units: ``(1 - p) * size`` rounded half up, keeping one."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}")
    # The 1e-9 absorbs binary noise such as (1 - 0.7) * 10 = 3.0000000000000004 before rounding.
    return min(math.floor((1.0 - keep_ratio) * size + 0.5 + 1e-9), size - 1)


def kept_counts(layout: UnitLayout, keep_ratio: float) -> tuple[int, ...]:
    """Units kept per group at ``keep_ratio``."""
    return tuple(g.size - drop_count(g.size, keep_ratio) for g in layout.groups)


@dataclass(frozen=True, slots=True, eq=False)
class Selection:
    """Kept and dropped unit indices per group (sorted), and the counts the client's metrics report."""

    kept: tuple[np.ndarray, ...]
    dropped: tuple[np.ndarray, ...]
    units_dropped: int
    units_dropped_invariant: int

    @classmethod
    def of_dropped(
        cls, layout: UnitLayout, dropped: Sequence[np.ndarray], invariant: np.ndarray | None = None
    ) -> Selection:
        """Complete a drop set into a selection; ``invariant`` (bool per unit) counts the invariant drops."""
        drops = tuple(np.sort(np.asarray(d, dtype=np.int64)) for d in dropped)
        kept = tuple(np.setdiff1d(np.arange(g.size), d) for g, d in zip(layout.groups, drops, strict=True))
        n_inv = 0
        if invariant is not None:
            n_inv = sum(int(inv[d].sum()) for inv, d in zip(layout.split(invariant), drops, strict=True))
        return cls(kept, drops, sum(d.size for d in drops), n_inv)


class ThresholdCalibrator:
    """FLuID-style invariance threshold, one per client, kept across rounds.

    For the first ``warmup_rounds`` calls the threshold restarts at the smallest score seen so far;
    afterwards it carries over. In each call it is multiplied by ``growth`` (at most ``max_steps``
    times) until at least ``needed`` units score at or below it; a zero threshold first steps to the
    smallest positive score. It never decreases after warm-up, so a unit once invariant stays a
    candidate while it keeps changing less than the threshold.
    """

    def __init__(self, *, warmup_rounds: int = 2, growth: float = 1.25, max_steps: int = 100) -> None:
        if warmup_rounds < 1 or growth <= 1.0 or max_steps < 0:
            raise ValueError("need warmup_rounds >= 1, growth > 1 and max_steps >= 0")
        self.warmup_rounds = warmup_rounds
        self.growth = growth
        self.max_steps = max_steps
        self._calls = 0
        self._lowest: float | None = None
        self._threshold: float | None = None

    @property
    def threshold(self) -> float | None:
        """The current threshold, ``None`` before the first call."""
        return self._threshold

    def update(self, scores: np.ndarray, needed: int) -> float:
        """Calibrate on this round's ``scores`` so that ``needed`` units qualify if possible; return it."""
        if scores.size == 0:
            raise ValueError("no unit scores")
        self._calls += 1
        lowest = float(scores.min())
        self._lowest = lowest if self._lowest is None else min(self._lowest, lowest)
        if self._threshold is None or self._calls <= self.warmup_rounds:
            self._threshold = self._lowest
        threshold = self._threshold
        positive = scores[scores > 0]
        for _ in range(self.max_steps):
            if int(np.count_nonzero(scores <= threshold)) >= needed:
                break
            if threshold > 0:
                threshold *= self.growth
            elif positive.size:
                threshold = float(positive.min())
            else:
                break
        self._threshold = threshold
        return threshold


def select_invariant(
    layout: UnitLayout,
    scores: np.ndarray,
    threshold: float,
    keep_ratio: float,
    rng: np.random.Generator,
    previous_dropped: Sequence[np.ndarray] | None = None,
) -> Selection:
    """CLIP/FLuID drop set: sticky, then invariant by ascending score, then random fill (per layer)."""
    if scores.shape != (layout.units,):
        raise ValueError(f"scores have shape {scores.shape}, the layout has {layout.units} units")
    invariant = scores <= threshold
    previous = (
        previous_dropped if previous_dropped is not None else [np.empty(0, np.int64)] * len(layout.groups)
    )
    drops = []
    for g, score, inv, prev in zip(
        layout.groups, layout.split(scores), layout.split(invariant), previous, strict=True
    ):
        n = drop_count(g.size, keep_ratio)
        order = np.argsort(score, kind="stable")
        was_dropped = np.zeros(g.size, dtype=bool)
        was_dropped[np.asarray(prev, dtype=np.int64)] = True
        sticky = order[inv[order] & was_dropped[order]]
        fresh = order[inv[order] & ~was_dropped[order]]
        chosen = np.concatenate([sticky, fresh])[:n]
        if chosen.size < n:
            rest = np.setdiff1d(np.arange(g.size), chosen)
            chosen = np.concatenate([chosen, rng.choice(rest, size=n - chosen.size, replace=False)])
        drops.append(chosen)
    return Selection.of_dropped(layout, drops, invariant)


def select_random(
    layout: UnitLayout, keep_ratio: float, rng: np.random.Generator, invariant: np.ndarray | None = None
) -> Selection:
    """Federated Dropout: drop uniformly random units, same count rule."""
    drops = [rng.choice(g.size, size=drop_count(g.size, keep_ratio), replace=False) for g in layout.groups]
    return Selection.of_dropped(layout, drops, invariant)


def select_ordered(layout: UnitLayout, keep_ratio: float, invariant: np.ndarray | None = None) -> Selection:
    """FjORD ordered dropout: keep the first units of every layer, drop the tail."""
    drops = [np.arange(g.size - drop_count(g.size, keep_ratio), g.size) for g in layout.groups]
    return Selection.of_dropped(layout, drops, invariant)
