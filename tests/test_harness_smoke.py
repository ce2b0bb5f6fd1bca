"""Smoke run of the benchmark harness (issue 6, tests): ``digits-quick`` with two strategies and one
seed, as real launcher processes, rounds cut to 3 (one warm-up, two timed) to keep it short. It checks
that the harness drives real federations end to end and honours the ``results.json`` contract; the
figures themselves are not asserted (they are measurements of a shared machine, not unit facts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import harness

CONTRACT = {
    "mean_round_seconds",
    "time_to_target_seconds",
    "final_accuracy",
    "speedup_round_time",
    "speedup_time_to_target",
    "accuracy_delta_points",
    "round_time_vs_ideal",
    "overruns",
}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_digits_quick_two_strategies_one_seed(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = ["--scenario", "digits-quick", "--engine", "live", "--strategies", "none,ideal", "--seeds", "1"]
    argv += ["--rounds", "3"]
    code = harness.main([*argv, "--out", str(out), "--shaping", "app"])
    results = json.loads((out / "results.json").read_text())
    assert code == 0, [r["message"] for r in results["runs"] if r["status"] != "ok"]
    assert results["scenario"] == "digits-quick" and results["seeds"] == [0]
    assert results["shaping"] == "app"
    assert set(results["strategies"]) == {"none", "ideal"}
    for name, figures in results["strategies"].items():
        assert set(figures) >= CONTRACT, name
        assert figures["mean_round_seconds"] > 0 and 0 <= figures["final_accuracy"] <= 1
    assert results["strategies"]["none"]["speedup_round_time"] == 0.0
    assert results["strategies"]["ideal"]["round_time_vs_ideal"] == 1.0
    for run in results["runs"]:
        run_dir = out / run["run_dir"]
        assert (run_dir / "summary.json").exists() and len(
            (run_dir / "metrics.jsonl").read_text().splitlines()
        ) == 3
    assert (out / "report.md").read_text().startswith("# Benchmark `digits-quick`")
    assert all(
        (out / p).exists() for p in ("accuracy_vs_time.png", "round_time.png", "straggler_keep_ratio.png")
    )
