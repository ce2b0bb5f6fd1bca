"""Threshold calibration and drop sets (DESIGN 5.4, 5.6): count rule, drop order, baselines."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from clip_testmodels import CharLSTM, mlp
from hypothesis import given
from hypothesis import strategies as st

from clipfl.clip import (
    ThresholdCalibrator,
    UnitLayout,
    drop_count,
    kept_counts,
    select_invariant,
    select_ordered,
    select_random,
)


@pytest.mark.parametrize(
    ("size", "p", "expected"),
    [
        (10, 0.5, 5),
        (10, 0.75, 3),
        (10, 0.7, 3),
        (3, 0.5, 2),
        (128, 0.5, 64),
        (10, 1.0, 0),
        (1, 0.5, 0),
        (2, 0.1, 1),
    ],
)
def test_drop_count_rounds_half_up_and_keeps_one(size: int, p: float, expected: int) -> None:
    assert drop_count(size, p) == expected


def test_drop_count_refuses_impossible_ratios() -> None:
    for p in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError):
            drop_count(10, p)


def test_calibrator_starts_at_smallest_score_of_warmup_then_raises_in_steps() -> None:
    cal = ThresholdCalibrator(warmup_rounds=2, growth=2.0)
    scores = np.array([0.1, 0.3, 0.5, 0.9])
    assert cal.update(scores, needed=1) == 0.1  # the smallest score already qualifies one unit
    assert (
        cal.update(np.array([0.05, 0.3, 0.5, 0.9]), needed=1) == 0.05
    )  # warm-up: restart at the new minimum
    assert cal.update(scores, needed=3) == 0.8  # 0.05 -> 0.1 -> 0.2 -> 0.4 -> 0.8: three units <= 0.8
    assert cal.update(scores, needed=1) == 0.8  # after warm-up it never goes down


def test_calibrator_steps_from_zero_to_smallest_positive_score() -> None:
    cal = ThresholdCalibrator(warmup_rounds=1, growth=1.5)
    assert cal.update(np.array([0.0, 0.0, 0.2, 0.4]), needed=3) == 0.2
    assert cal.threshold == 0.2


def test_calibrator_gives_up_after_max_steps() -> None:
    cal = ThresholdCalibrator(warmup_rounds=1, growth=2.0, max_steps=3)
    assert cal.update(np.array([1.0, 100.0]), needed=2) == 8.0


def layout_of_sizes(*sizes: int) -> UnitLayout:
    """A chain of Linear layers whose hidden groups have ``sizes`` units."""
    from torch import nn

    dims = [3, *sizes, 2]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return UnitLayout.of(nn.Sequential(*layers[:-1]), (3,))


def test_invariant_drop_order_sticky_then_ascending_then_random() -> None:
    layout = layout_of_sizes(8)
    scores = np.array([0.9, 0.1, 0.5, 0.05, 0.3, 0.8, 0.02, 0.7])
    threshold = 0.35  # invariant: units 1 (0.1), 3 (0.05), 4 (0.3), 6 (0.02)
    previous = (np.array([4, 5]),)  # 4 is still invariant (sticky), 5 is not any more
    sel = select_invariant(layout, scores, threshold, 0.5, np.random.default_rng(0), previous)
    assert sorted(sel.dropped[0].tolist()) == [1, 3, 4, 6]  # exactly the invariant units
    sel = select_invariant(layout, scores, threshold, 0.625, np.random.default_rng(0), previous)
    assert sorted(sel.dropped[0].tolist()) == [3, 4, 6]  # sticky 4 first, then 6 and 3 by ascending score
    assert sel.units_dropped == 3 and sel.units_dropped_invariant == 3
    sel = select_invariant(layout, scores, threshold, 0.75, np.random.default_rng(0), previous)
    assert sorted(sel.dropped[0].tolist()) == [4, 6]  # sticky beats the lower-scoring unit 3
    sel = select_invariant(layout, scores, threshold, 0.75, np.random.default_rng(0))
    assert sorted(sel.dropped[0].tolist()) == [3, 6]  # no history: ascending score


def test_invariant_fills_with_random_units_from_the_generator() -> None:
    layout = layout_of_sizes(8)
    scores = np.array([0.9, 0.1, 0.5, 0.05, 0.3, 0.8, 0.02, 0.7])
    picks = set()
    for seed in range(20):
        sel = select_invariant(layout, scores, 0.06, 0.25, np.random.default_rng(seed))
        dropped = set(sel.dropped[0].tolist())
        assert {3, 6} <= dropped and len(dropped) == 6
        assert sel.units_dropped == 6 and sel.units_dropped_invariant == 2
        picks.add(frozenset(dropped))
        again = select_invariant(layout, scores, 0.06, 0.25, np.random.default_rng(seed))
        assert again.dropped[0].tolist() == sel.dropped[0].tolist()  # deterministic given the generator
    assert len(picks) > 1


@given(p=st.floats(0.05, 1.0), seed=st.integers(0, 2**32 - 1))
def test_every_strategy_obeys_the_count_rule_per_layer(p: float, seed: int) -> None:
    layout = layout_of_sizes(7, 1, 12)
    rng = np.random.default_rng(seed)
    scores = rng.random(layout.units)
    selections = [
        select_invariant(layout, scores, float(np.median(scores)), p, rng),
        select_random(layout, p, rng),
        select_ordered(layout, p),
    ]
    for sel in selections:
        for g, kept, dropped in zip(layout.groups, sel.kept, sel.dropped, strict=True):
            assert dropped.size == drop_count(g.size, p) and kept.size == g.size - dropped.size >= 1
            assert sorted([*kept.tolist(), *dropped.tolist()]) == list(range(g.size))
        assert tuple(k.size for k in sel.kept) == kept_counts(layout, p)
        assert sel.units_dropped == sum(d.size for d in sel.dropped)


def test_ordered_keeps_the_first_units_and_counts_invariant_drops() -> None:
    layout = layout_of_sizes(4, 6)
    invariant = np.zeros(10, dtype=bool)
    invariant[[3, 9, 0]] = True
    sel = select_ordered(layout, 0.5, invariant)
    assert [k.tolist() for k in sel.kept] == [[0, 1], [0, 1, 2]]
    assert [d.tolist() for d in sel.dropped] == [[2, 3], [3, 4, 5]]
    assert sel.units_dropped == 5 and sel.units_dropped_invariant == 2  # unit 3 of layer 1, unit 5 of layer 2


def test_lstm_layers_drop_equal_counts() -> None:
    layout = UnitLayout.of(CharLSTM(5, 2, 10), (3,))
    assert kept_counts(layout, 0.66) == (7, 7)
    assert kept_counts(UnitLayout.of(mlp(2, 9, 2), (2,)), 0.66) == (6,)
