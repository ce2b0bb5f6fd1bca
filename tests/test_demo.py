"""``make demo``'s summary: the short table and the overrun verdict, from a harness results mapping."""

from __future__ import annotations

from benchmarks.demo import short_table, verdict


def _results(overrun_fraction: float) -> dict:
    row = {
        "mean_round_seconds": 1.8,
        "time_to_target_seconds": 3.9,
        "final_accuracy": 0.9666,
        "speedup_time_to_target": 0.0,
        "overrun_fraction": 0.0,
    }
    return {
        "strategies": {
            "none": row,
            "clip": {**row, "mean_round_seconds": 1.22, "speedup_time_to_target": 0.277},
            "ideal": {**row, "overrun_fraction": overrun_fraction, "speedup_time_to_target": None},
        }
    }


def test_the_table_has_one_line_per_strategy_with_the_speed_up_over_waiting() -> None:
    lines = short_table(_results(0.0)).splitlines()
    assert [line.split()[0] for line in lines] == ["strategy", "none", "clip", "ideal"]
    assert "1.22 s" in lines[2] and "+28 %" in lines[2]
    assert lines[3].endswith("-")


def test_overruns_above_the_flag_are_reported_with_what_to_change() -> None:
    assert verdict(_results(0.0)) is None
    assert verdict(_results(0.05)) is None
    warning = verdict(_results(0.5))
    assert warning is not None and "50 %" in warning and "slowdown" in warning
