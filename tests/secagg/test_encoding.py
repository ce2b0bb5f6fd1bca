"""Fixed-point encoding: no wrap inside the accepted configurations, bounded error, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clipfl.errors import ConfigError
from clipfl.secagg.encoding import MIN_LEVELS, SUM_LIMIT, FixedPoint, UpdateLayout

federations = st.tuples(
    st.integers(1, 30_000),  # clients
    st.floats(1.0, 1e5),  # max weight
    st.floats(1e-3, 1e3),  # clip range
)


@given(federations)
def test_for_federation_picks_the_largest_scale_that_cannot_wrap(fed: tuple[int, float, float]) -> None:
    n, w, c = fed
    try:
        codec = FixedPoint.for_federation(n, w, c)
    except ConfigError:
        assert SUM_LIMIT / n - 2 < MIN_LEVELS * 1.0001  # refused only when the resolution is useless
        return
    assert n * (w * c * codec.scale + 2) <= SUM_LIMIT
    # a scale 0.01% larger would break the guarantee: the chosen one is (essentially) the largest
    assert n * (w * c * codec.scale * 1.0001 + 2) > SUM_LIMIT


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    c=st.floats(1e-2, 10.0),
    seed=st.integers(0, 2**32 - 1),
    stochastic=st.booleans(),
)
def test_worst_case_sum_decodes_exactly_within_the_error_bound(
    n: int, c: float, seed: int, stochastic: bool
) -> None:
    """Every client at max weight, every coordinate at (or beyond) the clip edge: the sum must not wrap."""
    w = 1000.0
    codec = FixedPoint.for_federation(n, w, c)
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0])
    xs = [sign * (c + rng.random(64) * c).astype(np.float32) for _ in range(n)]  # beyond the clip range
    total = np.zeros(64, dtype=np.uint32)
    for x in xs[:n]:
        np.add(total, codec.encode(x, w, rng if stochastic else None), out=total)
    decoded = codec.decode_sum(total)
    exact = n * w * sign * c  # clipping happens in float64, at c exactly
    assert np.all(np.abs(decoded - exact) <= codec.error_bound(n, stochastic=stochastic) + 1e-9 * abs(exact))
    assert np.all(np.sign(decoded) == sign)  # a wrap would flip the sign


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.float32, st.integers(1, 50), elements=st.floats(-4, 4, width=32)),
    weight=st.floats(0.0, 100.0),
    stochastic=st.booleans(),
)
def test_error_per_coordinate_is_below_one_step(x: np.ndarray, weight: float, stochastic: bool) -> None:
    codec = FixedPoint.for_federation(20, 100.0, 2.0)
    rng = np.random.default_rng(0) if stochastic else None
    decoded = codec.decode_sum(codec.encode(x, weight, rng))
    target = weight * np.clip(x.astype(np.float64), -2.0, 2.0)
    step = codec.resolution * (1.0 if stochastic else 0.5)
    assert np.all(np.abs(decoded - target) <= step * (1 + 1e-9))


def test_stochastic_rounding_is_unbiased() -> None:
    codec = FixedPoint(clip_range=1.0, scale=4.0, n_clients=1, max_weight=2**20)  # coarse: 1/4 steps
    x = np.full(200_000, 0.1, dtype=np.float32)  # 0.4 steps: nearest rounding always gives 0
    rng = np.random.default_rng(7)
    assert codec.decode_sum(codec.encode(x, 1.0)).mean() == 0.0
    mean = codec.decode_sum(codec.encode(x, 1.0, rng)).mean()
    assert abs(mean - float(np.float32(0.1))) < 0.002  # standard error ~ 0.0005


def test_two_complement_negative_values_round_trip() -> None:
    codec = FixedPoint.for_federation(3, 1.0, 1.0)
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=np.float32)
    total = codec.encode(x) + codec.encode(x) + codec.encode(-x)  # uint32 arithmetic wraps
    np.testing.assert_allclose(codec.decode_sum(total), x, atol=1.5 / codec.scale)


@pytest.mark.parametrize(
    ("n", "w", "c", "scale", "match"),
    [
        (10, 1000.0, 1.0, 1e6, "could wrap"),  # 10 * 1e9 > 2^31
        (40_000, 1.0, 1.0, 10.0, "too coarse"),  # 10 levels per client
        (0, 1.0, 1.0, 1.0, "n_clients"),
        (1, 1.0, 1.0, math.inf, "scale"),
    ],
)
def test_refused_configurations(n: int, w: float, c: float, scale: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FixedPoint(clip_range=c, scale=scale, n_clients=n, max_weight=w)


def test_for_federation_refuses_more_clients_than_32_bits_can_serve() -> None:
    with pytest.raises(ConfigError, match="too coarse"):
        FixedPoint.for_federation(50_000, 1000.0, 1.0)


def test_encode_refuses_overweight_and_non_finite_input() -> None:
    codec = FixedPoint.for_federation(10, 100.0, 1.0)
    with pytest.raises(ValueError, match="could wrap"):
        codec.encode(np.zeros(3, np.float32), 101.0)
    with pytest.raises(ValueError, match="non-finite"):
        codec.encode(np.array([0.0, np.nan], np.float32), 1.0)


@given(
    trained=st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=30),
    data=st.data(),
)
def test_coverage_sums_exactly(trained: list[list[bool]], data: st.DataObject) -> None:
    codec = FixedPoint.for_federation(30, 1000.0, 1.0)
    layout = UpdateLayout(delta_size=4, coverage_size=6)
    weights = [data.draw(st.integers(0, 1000)) for _ in trained]
    total = np.zeros(layout.size, dtype=np.uint32)
    for mask, w in zip(trained, weights, strict=True):
        delta = np.full(4, 0.25, dtype=np.float32)
        np.add(total, layout.encode(codec, delta, np.array(mask), w), out=total)
    delta_sum, coverage = layout.decode(codec, total)
    expected = np.array(trained, dtype=np.int64).T @ np.array(weights, dtype=np.int64)
    np.testing.assert_array_equal(coverage, expected)
    assert np.all(
        np.abs(delta_sum - 0.25 * sum(weights)) <= codec.error_bound(len(trained), stochastic=False)
    )


def test_coverage_averages_each_unit_over_the_clients_that_trained_it() -> None:
    """DESIGN section 4: dividing by coverage, not by the total weight, undoes the zero padding."""
    codec = FixedPoint.for_federation(3, 100.0, 1.0)
    layout = UpdateLayout(delta_size=2, coverage_size=2)  # unit 0 -> coordinate 0, the rest -> coordinate 1
    clients = [  # (delta re-inflated with zeros where pruned, trained units, weight)
        (np.array([0.5, 0.1], np.float32), np.array([True, True]), 10),
        (np.array([0.0, 0.3], np.float32), np.array([False, True]), 30),  # pruned unit 0
        (np.array([0.2, 0.2], np.float32), np.array([True, True]), 20),
    ]
    total = np.zeros(layout.size, dtype=np.uint32)
    for delta, trained, w in clients:
        np.add(total, layout.encode(codec, delta, trained, w), out=total)
    delta_sum, coverage = layout.decode(codec, total)
    assert coverage.tolist() == [30, 60]
    np.testing.assert_allclose(delta_sum / coverage, [(5 + 4) / 30, (1 + 9 + 4) / 60], atol=1e-6)
