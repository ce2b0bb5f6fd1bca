"""Smoke run of the benchmark harness (issue 6, tests): a digits scenario cut to its bones (3 clients, 3
rounds of one epoch, one straggler at 2x) with two strategies and one seed, as real launcher processes.
It checks that the harness drives real federations end to end and honours the ``results.json``
contract; the figures themselves are not asserted (they are measurements of a shared machine, not
unit facts). The shipped scenarios' sizes are the simulator's tests' business (tests/test_sim.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import harness

SMOKE = """
description = "the harness smoke test's federation"
target_accuracy = 0.5
warmup_rounds = 1
run_timeout = 150
secagg = "secagg"
[federation]
dataset = "digits"
clients = 3
rounds = 3
local_epochs = 1
round_timeout = 30
[devices]
slowdown = 1.0
[stragglers]
ids = [1]
slowdown = 2.0
"""

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
def test_a_live_benchmark_of_two_strategies_honours_the_results_contract(tmp_path: Path) -> None:
    toml = tmp_path / "smoke.toml"
    toml.write_text(SMOKE)
    out = tmp_path / "bench"
    argv = ["--scenario", str(toml), "--engine", "live", "--strategies", "none,ideal", "--seeds", "1"]
    code = harness.main([*argv, "--out", str(out), "--shaping", "app"])
    results = json.loads((out / "results.json").read_text())
    assert code == 0, [r["message"] for r in results["runs"] if r["status"] != "ok"]
    assert results["scenario"] == "smoke" and results["seeds"] == [0] and results["engine"] == "live"
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
    assert (out / "report.md").read_text().startswith("# Benchmark `smoke`")
    assert all(
        (out / p).exists() for p in ("accuracy_vs_time.png", "round_time.png", "straggler_keep_ratio.png")
    )
