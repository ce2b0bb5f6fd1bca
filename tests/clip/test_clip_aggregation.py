"""Coverage-weighted averaging from sums only (DESIGN section 4).

Integer-valued deltas and weights keep every sum exact, so "equals per-unit FedAvg" is checked with
exact equality wherever the ``min`` rule is exact (nested trainer sets).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from clip_testmodels import CharLSTM, conv_chain
from hypothesis import given, settings
from hypothesis import strategies as st

from clipfl.clip import (
    UnitLayout,
    average_update,
    coordinate_divisor,
    full_coverage,
    select_ordered,
    select_random,
    unit_coverage,
)

LAYOUTS = {
    "conv": UnitLayout.of(conv_chain(batchnorm=True), (3, 8, 8)),
    "lstm": UnitLayout.of(CharLSTM(6, embed_dim=3, hidden=5), (4,)),
}


def client_sums(
    layout: UnitLayout,
    kept_per_client: Sequence[tuple[np.ndarray, ...] | None],
    weights: list[int],
    seed: int,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Sum of weighted deltas and of coverages, plus each client's delta and coordinate mask."""
    rng = np.random.default_rng(seed)
    deltas, masks = [], []
    delta_sum = np.zeros(layout.spec.size)
    coverage_sum = np.zeros(layout.units + 1)
    for kept, w in zip(kept_per_client, weights, strict=True):
        mask = np.ones(layout.spec.size, bool) if kept is None else layout.coordinate_mask(kept)
        delta = rng.integers(-50, 51, layout.spec.size).astype(np.float64) * mask  # zeros where pruned
        deltas.append(delta)
        masks.append(mask)
        delta_sum += w * delta
        coverage_sum += full_coverage(layout, w) if kept is None else unit_coverage(layout, kept, w)
    return delta_sum, coverage_sum, deltas, masks


def fedavg_over_trainers(deltas: list[np.ndarray], masks: list[np.ndarray], weights: list[int]) -> np.ndarray:
    """Per coordinate, the weighted mean over the clients that trained it (0 if none did)."""
    num = sum(w * d for w, d in zip(weights, deltas, strict=True))
    den = sum(w * m.astype(np.float64) for w, m in zip(weights, masks, strict=True))
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


@settings(max_examples=40, deadline=None)
@given(
    which=st.sampled_from(sorted(LAYOUTS)),
    ratios=st.lists(st.sampled_from([None, 1.0, 0.8, 0.6, 0.5, 0.3]), min_size=1, max_size=5),
    weights=st.lists(st.integers(1, 20), min_size=5, max_size=5),
    seed=st.integers(0, 2**32 - 1),
)
def test_nested_pruning_averages_each_coordinate_over_its_trainers_exactly(
    which: str, ratios: list[float | None], weights: list[int], seed: int
) -> None:
    """Ordered dropout keeps nested prefixes, so two-unit ties have nested trainers: min is exact."""
    layout = LAYOUTS[which]
    kept = [None if p is None else select_ordered(layout, p).kept for p in ratios]
    w = weights[: len(kept)]
    delta_sum, coverage_sum, deltas, masks = client_sums(layout, kept, w, seed)
    np.testing.assert_array_equal(
        average_update(layout, delta_sum, coverage_sum), fedavg_over_trainers(deltas, masks, w)
    )


@settings(max_examples=40, deadline=None)
@given(
    which=st.sampled_from(sorted(LAYOUTS)),
    n_full=st.integers(0, 4),
    p=st.floats(0.2, 1.0),
    weights=st.lists(st.integers(1, 20), min_size=5, max_size=5),
    seed=st.integers(0, 2**32 - 1),
)
def test_one_random_straggler_is_averaged_exactly(
    which: str, n_full: int, p: float, weights: list[int], seed: int
) -> None:
    """At most one client pruned any unit: the min rule is exact for arbitrary (random) drop sets."""
    layout = LAYOUTS[which]
    kept = [select_random(layout, p, np.random.default_rng(seed)).kept, *([None] * n_full)]
    w = weights[: len(kept)]
    delta_sum, coverage_sum, deltas, masks = client_sums(layout, kept, w, seed)
    np.testing.assert_array_equal(
        average_update(layout, delta_sum, coverage_sum), fedavg_over_trainers(deltas, masks, w)
    )


@settings(max_examples=30, deadline=None)
@given(
    which=st.sampled_from(sorted(LAYOUTS)),
    n=st.integers(2, 5),
    weights=st.lists(st.integers(1, 20), min_size=5, max_size=5),
    seed=st.integers(0, 2**32 - 1),
)
def test_min_rule_never_amplifies_and_is_exact_on_single_unit_ties(
    which: str, n: int, weights: list[int], seed: int
) -> None:
    layout = LAYOUTS[which]
    rng = np.random.default_rng(seed)
    kept = [select_random(layout, 0.5, rng).kept for _ in range(n)]
    w = weights[:n]
    _, coverage_sum, _, masks = client_sums(layout, kept, w, seed)
    true = np.sum([wc * m.astype(np.float64) for wc, m in zip(w, masks, strict=True)], axis=0)
    divisor = coordinate_divisor(layout, coverage_sum)
    assert (divisor >= true).all()
    single = (layout.out_unit == layout.units) | (layout.in_unit == layout.units)
    np.testing.assert_array_equal(divisor[single], true[single])


def test_zero_pad_divides_by_total_weight_and_untrained_coordinates_stay_zero() -> None:
    layout = LAYOUTS["conv"]
    kept = [select_ordered(layout, 0.5).kept, select_ordered(layout, 0.5).kept]
    delta_sum, coverage_sum, _, masks = client_sums(layout, kept, [3, 5], 0)
    np.testing.assert_array_equal(average_update(layout, delta_sum, coverage_sum, "zero-pad"), delta_sum / 8)
    averaged = average_update(layout, delta_sum, coverage_sum)
    assert not averaged[~masks[0]].any()
    assert np.count_nonzero(coordinate_divisor(layout, coverage_sum) == 0) == np.count_nonzero(~masks[0])


def test_float32_sums_give_float32_and_bad_inputs_are_refused() -> None:
    layout = LAYOUTS["lstm"]
    out = average_update(layout, np.ones(layout.spec.size, np.float32), full_coverage(layout, 2.0))
    assert out.dtype == np.float32 and (out == 0.5).all()
    with pytest.raises(ValueError, match="mode"):
        average_update(layout, np.ones(layout.spec.size), full_coverage(layout), "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coverage"):
        coordinate_divisor(layout, np.ones(layout.units))
