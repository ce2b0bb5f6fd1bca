"""Planner arithmetic with scripted timings (DESIGN 5.1-5.3; issue 5 item 2)."""

from __future__ import annotations

import math
import random

import pytest
from clip_testmodels import vgg_like
from hypothesis import given
from hypothesis import strategies as st

from clipfl.clip import (
    LatencyHistory,
    PlannerConfig,
    RoundTiming,
    TimingReport,
    UnitLayout,
    flop_ratio,
    plan_round,
    round_target,
)
from clipfl.errors import ConfigError, RemoteProtocolError


def squared(p: float) -> float:
    """A scripted FLOP ratio: every layer interior, so the cost scales with p^2."""
    return p * p


def history(*rounds: tuple[float, float, float, float]) -> LatencyHistory:
    """Rounds as (download, fit, upload, flop_ratio)."""
    h = LatencyHistory(window=5)
    for i, (d, f, u, r) in enumerate(rounds, start=1):
        h.record(RoundTiming(round=i, download_s=d, fit_s=f, upload_s=u, flop_ratio=r))
    return h


def peers(n: int, fit: float, network: float) -> list[TimingReport]:
    return [
        TimingReport(
            round=3,
            download_s=network / 2,
            fit_s=fit,
            upload_s=network / 2,
            predicted_fit_s=fit,
            predicted_total_s=fit + network,
        )
        for _ in range(n)
    ]


SLOW = history((2.0, 10.0, 2.0, 1.0), (2.0, 10.0, 2.0, 1.0))  # D + F + U = 14 s, 4 s of it network
FOUR_PEERS = peers(4, fit=6.0, network=2.0)  # 8 s each


def test_network_aware_keeps_network_terms_and_prunes_further() -> None:
    plan = plan_round(PlannerConfig(mode="clip"), SLOW, FOUR_PEERS, squared)
    # T* = 4th of [8, 8, 8, 8, 14] = 8; 10 p^2 + 4 <= 8  ->  p <= 0.632
    assert plan.straggler and plan.target_s == 8.0 and plan.keep_ratio == 0.63
    assert plan.flop_ratio == 0.63**2 and plan.predicted_fit_s == 10.0 * 0.63**2


def test_compute_aware_compares_fit_with_fit() -> None:
    plan = plan_round(PlannerConfig(mode="clip-compute"), SLOW, FOUR_PEERS, squared)
    # T*_fit = 4th of [6, 6, 6, 6, 10] = 6; 10 p^2 <= 6  ->  p <= 0.775
    assert plan.straggler and plan.target_s == 6.0 and plan.keep_ratio == 0.77


def test_deadline_caps_the_target_in_both_modes() -> None:
    plan = plan_round(PlannerConfig(mode="clip"), SLOW, FOUR_PEERS, squared, deadline_s=7.0)
    assert plan.target_s == 7.0 and plan.keep_ratio == 0.54  # 10 p^2 <= 3
    plan = plan_round(PlannerConfig(mode="clip-compute"), SLOW, FOUR_PEERS, squared, deadline_s=7.0)
    assert plan.target_s == 3.0 and plan.keep_ratio == 0.54  # fit target = deadline - own network


def test_unreachable_target_gives_the_minimum_keep_ratio() -> None:
    plan = plan_round(PlannerConfig(mode="clip", min_keep_ratio=0.6), SLOW, peers(4, 1.0, 1.0), squared)
    assert plan.straggler and plan.keep_ratio == 0.6 and plan.predicted_fit_s == 10.0 * 0.36


def test_fast_client_and_client_without_reports_train_the_full_model() -> None:
    fast = history((1.0, 6.0, 1.0, 1.0))
    for config in (PlannerConfig(mode="clip"), PlannerConfig(mode="clip-compute")):
        plan = plan_round(config, fast, [*FOUR_PEERS[:3], *peers(1, 10.0, 4.0)], squared)
        assert not plan.straggler and plan.keep_ratio == 1.0 and plan.flop_ratio == 1.0
    plan = plan_round(PlannerConfig(), SLOW, [], squared)
    assert not plan.straggler and plan.keep_ratio == 1.0 and plan.target_s is None
    plan = plan_round(PlannerConfig(), LatencyHistory(), FOUR_PEERS, squared)
    assert not plan.straggler and plan.keep_ratio == 1.0 and plan.predicted_fit_s is None


def test_correction_is_the_median_miss_of_flop_predictions() -> None:
    # full fit 10 s; a pruned round at FLOP ratio 0.4 took 6 s instead of 4 s: correction 1.5
    h = history((2.0, 10.0, 2.0, 1.0), (2.0, 6.0, 2.0, 0.4), (2.0, 10.0, 2.0, 1.0))
    assert h.full_fit_s == 10.0 and h.correction == 1.5
    assert h.predict_fit(1.0) == 10.0 and h.predict_fit(0.5) == 7.5
    plan = plan_round(PlannerConfig(mode="clip-compute"), h, FOUR_PEERS, squared)
    assert plan.keep_ratio == 0.63  # 15 p^2 <= 6  ->  p <= 0.632


def test_history_window_medians_and_last_full_fit() -> None:
    h = LatencyHistory(window=3)
    for i, (d, f, r) in enumerate([(9.0, 20.0, 1.0), (1.0, 8.0, 0.5), (2.0, 9.0, 0.5), (3.0, 7.0, 0.5)], 1):
        h.record(RoundTiming(round=i, download_s=d, fit_s=f, upload_s=0.5, flop_ratio=r))
    assert len(h) == 3 and h.download_s == 2.0 and h.upload_s == 0.5  # round 1 left the window
    assert h.full_fit_s == 20.0  # no full round in the window: the last one ever
    assert h.correction == 0.8  # median of 8/10, 9/10, 7/10
    report = h.report(4)
    assert report == TimingReport(
        round=4, download_s=3.0, fit_s=7.0, upload_s=0.5, predicted_fit_s=20.0, predicted_total_s=22.5
    )
    assert LatencyHistory().report(1) is None


def test_round_target_is_the_slowest_non_straggler() -> None:
    latencies = [float(x) for x in range(1, 21)]
    random.Random(0).shuffle(latencies)
    assert round_target(latencies, 0.2) == 16.0  # 20 clients, f = 0.2: the slowest of the 16 fastest
    assert round_target([5.0, 1.0, 4.0, 2.0, 3.0], 0.2) == 4.0
    assert round_target([3.0, 1.0, 2.0], 0.2) == 3.0  # floor(0.6) = 0 stragglers
    assert round_target([7.0], 0.5) == 7.0
    assert round_target([float(x) for x in range(100)], 0.29) == 70.0  # 29 stragglers, not 28 (binary noise)


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=50), st.floats(0, 0.99))
def test_round_target_leaves_floor_f_n_clients_above(latencies: list[float], f: float) -> None:
    target = round_target(latencies, f)
    n = len(latencies)
    assert sum(x > target for x in latencies) <= math.floor(f * n + 1e-9)
    assert sum(x >= target for x in latencies) >= 1


def test_grid_and_config_validation() -> None:
    assert PlannerConfig(grid_step=0.15).grid() == [0.85, 0.7, 0.55, 0.5]
    grid = PlannerConfig().grid()
    assert len(grid) == 50 and grid[0] == 0.99 and grid[-1] == 0.5
    assert PlannerConfig(min_keep_ratio=1.0).grid() == []
    for bad in ({"mode": "fast"}, {"straggler_fraction": 1.0}, {"min_keep_ratio": 0.0}, {"grid_step": 0.0}):
        with pytest.raises(ConfigError):
            PlannerConfig(**bad)


def test_planner_with_the_exact_flop_ratio_of_a_real_layout() -> None:
    layout = UnitLayout.of(vgg_like(), (3, 32, 32))
    plan = plan_round(PlannerConfig(mode="clip-compute"), SLOW, FOUR_PEERS, lambda p: flop_ratio(layout, p))
    assert plan.straggler and 0.5 <= plan.keep_ratio < 1.0
    assert (
        10.0 * flop_ratio(layout, plan.keep_ratio) <= 6.0 < 10.0 * flop_ratio(layout, plan.keep_ratio + 0.01)
    )


def test_timing_report_round_trip_and_peer_faults() -> None:
    report = FOUR_PEERS[0]
    assert TimingReport.from_dict(report.to_dict()) == report
    bad: list[object] = [
        [1, 2],
        {**report.to_dict(), "extra": 1},
        {k: v for k, v in report.to_dict().items() if k != "fit_s"},
        {**report.to_dict(), "fit_s": -1.0},
        {**report.to_dict(), "fit_s": float("nan")},
        {**report.to_dict(), "upload_s": "fast"},
        {**report.to_dict(), "round": True},
    ]
    for data in bad:
        with pytest.raises(RemoteProtocolError):
            TimingReport.from_dict(data)
