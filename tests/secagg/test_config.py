"""SecAggConfig: validation in the constructor, defaults resolved per round size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipfl.errors import ConfigError
from clipfl.secagg import SecAggConfig


def test_secagg_default_threshold_is_bonawitz_active_two_thirds() -> None:
    """Bonawitz et al. (CCS 2017) section 6: t > 2n/3 against a server colluding with < n/3 clients."""
    r = SecAggConfig(mode="secagg").resolved(20)
    assert (r.neighbors, r.holders, r.threshold, r.complete_graph) == (19, 20, 14, True)
    for n in range(3, 200):
        assert SecAggConfig(mode="secagg").resolved(n).threshold == 2 * n // 3 + 1


def test_secagg_plus_defaults_follow_bell_et_al_bounds() -> None:
    """Bell et al. (CCS 2020): k and t from n, gamma = 1/3, delta = 0.2, sigma = 40, eta = 30."""
    got = {n: SecAggConfig().resolved(n) for n in (5, 20, 100, 1000)}
    assert {n: (r.neighbors, r.threshold) for n, r in got.items()} == {
        5: (4, 4),
        20: (16, 12),
        100: (75, 55),
        1000: (549, 396),
    }
    sparser = SecAggConfig(corrupted_fraction=0.05).resolved(1000)
    assert (sparser.neighbors, sparser.threshold) == (182, 109)


@given(st.integers(5, 1000), st.sampled_from(["secagg", "secagg+"]))
def test_defaults_are_safe_against_a_split_and_survive_the_stated_dropouts(n: int, mode: str) -> None:
    """In every neighbourhood of k + 1 holders, 2t exceeds the holders plus the corrupted ones the
    bound allows, so no split survivor set reaches t twice; where the graph is complete this is
    Bonawitz's t > 2n/3 and the floor(n/5) dropouts it is sized for are tolerated deterministically."""
    r = SecAggConfig(mode=mode).resolved(n)  # type: ignore[arg-type]
    assert 2 <= r.threshold <= r.holders
    assert r.complete_graph or (n * r.neighbors) % 2 == 0
    if r.complete_graph:
        assert 2 * r.threshold > n + n // 3
        assert n - r.threshold >= n // 5
    else:
        assert 2 * r.threshold > r.holders + r.neighbors // 3


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
        {"min_clients": 1},
        {"corrupted_fraction": 0.5},
        {"max_accusations": -1},
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


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"mode": "secagg", "n": 20, "threshold": 14, "neighbors": 19}, "configured for"),
        ({"mode": "secagg+", "n": 20, "threshold": 2, "neighbors": 16}, "t>=12"),
        ({"mode": "secagg+", "n": 20, "threshold": 12, "neighbors": 3}, "k>=16"),
        ({"mode": "secagg+", "n": 2, "threshold": 2, "neighbors": 1}, "rounds of 3 or more"),
    ],
    ids=["other mode", "lower threshold", "fewer neighbours", "too few clients"],
)
def test_a_client_refuses_a_round_weaker_than_its_own_config(setup: dict[str, object], reason: str) -> None:
    """Attack 2 at the configuration level: the client's own rule, not the server's numbers."""
    with pytest.raises(ConfigError, match=reason):
        SecAggConfig().check_setup(**setup)  # type: ignore[arg-type]


def test_a_client_accepts_a_stronger_round() -> None:
    r = SecAggConfig().check_setup(mode="secagg+", n=20, threshold=15, neighbors=19)
    assert (r.threshold, r.neighbors) == (15, 19)
