"""SecAggConfig: validation in the constructor, defaults resolved per round size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipfl.errors import ConfigError
from clipfl.secagg import SecAggConfig


def test_secagg_default_threshold_is_a_strict_majority() -> None:
    r = SecAggConfig(mode="secagg").resolved(20)
    assert (r.neighbors, r.holders, r.threshold, r.complete_graph) == (19, 20, 11, True)


def test_secagg_plus_default_degree_is_log2_n_made_even() -> None:
    assert SecAggConfig().resolved(20).neighbors == 5  # ceil(log2 20) = 5, 20 * 5 even
    assert SecAggConfig().resolved(21).neighbors == 6  # 21 * 5 odd: raised to 6
    assert SecAggConfig().resolved(100).neighbors == 7  # ceil(log2 100) = 7, 100 * 7 even
    assert SecAggConfig().resolved(3).neighbors == 2  # capped at n - 1: complete


@given(st.integers(2, 2000), st.sampled_from(["secagg", "secagg+"]))
def test_resolved_parameters_are_always_feasible(n: int, mode: str) -> None:
    r = SecAggConfig(mode=mode).resolved(n)  # type: ignore[arg-type]
    assert 1 <= r.neighbors <= n - 1
    assert r.complete_graph or (n * r.neighbors) % 2 == 0
    assert r.holders // 2 < r.threshold <= r.holders


def test_explicit_values_are_kept() -> None:
    config = SecAggConfig(mode="secagg+", neighbors=3, threshold=2)  # Flower's benchmark setting
    r = config.resolved(20)
    assert (r.neighbors, r.threshold) == (3, 2)
    assert config.resolved(21).neighbors == 4  # 21 * 3 is odd: no 3-regular graph on 21 nodes


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "plain"},
        {"threshold": 1},
        {"threshold": 2.5},
        {"mode": "secagg", "neighbors": 4},
        {"neighbors": 1},
        {"clip_range": 0.0},
        {"clip_range": float("nan")},
        {"max_weight": -1.0},
        {"max_private_bytes": 0},
    ],
)
def test_bad_settings_are_refused_in_the_constructor(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SecAggConfig(**kwargs)  # type: ignore[arg-type]


def test_impossible_rounds_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        SecAggConfig().resolved(1)
    with pytest.raises(ConfigError, match="exceeds"):
        SecAggConfig(mode="secagg", threshold=6).resolved(5)
