"""A change to the method against the paper table (``benchmarks.variant``): the change's parsing and
validation, the decision rule exactly on hand-made tables, and the command end to end on the real
FEMNIST data at a smoke size (skipped, saying why, where ../shared/data is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import paper, variant
from benchmarks.paper import pair_scenario
from benchmarks.simulated import run_config_of
from benchmarks.variant import Change, apply_change, decide, parse_change
from clipfl.errors import ConfigError


def test_a_change_is_one_federation_key_and_a_typed_value() -> None:
    assert parse_change("min_keep_ratio=0.4") == Change("min_keep_ratio", 0.4)
    assert parse_change(" aggregation = zero-pad ") == Change("aggregation", "zero-pad")
    assert parse_change("eval_overlap=false") == Change("eval_overlap", False)
    assert parse_change("eval_overlap=false").label == "eval_overlap=false"
    for bad, says in [
        ("min_keep_ratio", "is not KEY=VALUE"),
        ("=0.4", "is not KEY=VALUE"),
        ("keep=0.4", "'keep' is not a setting a variant may change"),
        ("rounds=10", "'rounds' is not a setting a variant may change"),  # another experiment
        ("seed=3", "'seed' is not a setting a variant may change"),  # the harness's
        ("min_keep_ratio=[0.4]", "must be a number, true/false or a word"),
    ]:
        with pytest.raises(ConfigError, match=says):
            parse_change(bad)


def test_a_change_is_validated_as_the_launcher_would_and_must_change_something() -> None:
    base = pair_scenario("femnist", "paper", 1)
    changed = apply_change(base, Change("min_keep_ratio", 0.4))
    before, after = run_config_of(base, "clip", 0), run_config_of(changed, "clip", 0)
    assert after.min_keep_ratio == 0.4 and before.min_keep_ratio == 0.5
    assert {
        name for name in before.__dataclass_fields__ if getattr(before, name) != getattr(after, name)
    } == {"min_keep_ratio"}
    with pytest.raises(ConfigError, match="already runs with it; nothing changes"):
        apply_change(base, Change("min_keep_ratio", 0.5))
    with pytest.raises(ConfigError, match="--set aggregation=mean: "):
        apply_change(base, Change("aggregation", "mean"))


def _table(*, faster: float, delta: float, final: float, random: float, tta: float | None) -> dict[str, Any]:
    """A paper table of clip, none, ideal and random with the figures goal_check reads (one seed)."""

    def spread(value: float | None) -> dict[str, Any]:
        n = int(value is not None)
        return {"median": value, "min": value, "max": value, "n": n}

    def row(**figures: float | None) -> dict[str, Any]:
        keys = (
            "time_to_target_seconds",
            "faster_than_none",
            "accuracy_delta_points",
            "round_time_vs_ideal",
            "final_accuracy",
            "straggler_own_accuracy",
        )
        return {key: spread(figures.get(key)) for key in keys}

    return {
        "strategies": {
            "none": row(final_accuracy=0.70),
            "ideal": row(final_accuracy=0.70),
            "random": row(final_accuracy=random),
            "clip": row(
                time_to_target_seconds=tta,
                faster_than_none=faster,
                accuracy_delta_points=delta,
                round_time_vs_ideal=1.0,
                final_accuracy=final,
            ),
        }
    }


def test_the_rule_adopts_a_change_that_gains_a_part_loses_none_and_is_no_slower() -> None:
    base = _table(faster=0.35, delta=-0.2, final=0.698, random=0.699, tta=60.0)
    gains = _table(faster=0.36, delta=-0.1, final=0.700, random=0.699, tta=59.0)  # >= random now
    verdict = decide([("femnist/paper", base, gains)])
    assert verdict.adopt is True and "femnist/paper: final_accuracy >= random" in verdict.reason
    # the same gain, but the target is reached later: CLIP's point is lost
    slower = _table(faster=0.30, delta=-0.1, final=0.700, random=0.699, tta=65.0)
    verdict = decide([("femnist/paper", base, slower)])
    assert verdict.adopt is False and "later on femnist/paper (60 s -> 65 s)" in verdict.reason
    # a gain on one pair and a loss on another: the base stays
    loses = _table(faster=0.35, delta=-1.5, final=0.685, random=0.699, tta=60.0)  # over 1 point lost
    verdict = decide([("femnist/paper", base, gains), ("femnist/drawn", base, loses)])
    assert verdict.adopt is False and "loses femnist/drawn: points_lost <= 1" in verdict.reason
    # as good, no better: the base stays
    assert decide([("femnist/paper", base, base)]).adopt is False
    # a pair without clip's run yet: no verdict
    unfinished = {"strategies": {k: v for k, v in gains["strategies"].items() if k != "clip"}}
    verdict = decide([("femnist/paper", base, gains), ("shakespeare/paper", base, unfinished)])
    assert verdict.adopt is None and "shakespeare/paper" in verdict.reason
    assert decide([]).adopt is None
    # a change whose clip never reaches the target is later than any base that does
    never = _table(faster=0.36, delta=-0.1, final=0.700, random=0.699, tta=None)
    assert decide([("femnist/paper", base, never)]).adopt is False


@pytest.mark.slow
def test_the_command_remakes_only_the_changed_strategies_and_reports_both_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = Path(os.environ.get("CLIPFL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (data / "femnist").is_dir():
        pytest.skip(f"the FEMNIST data is not at {data}/femnist (set CLIPFL_DATA)")
    os.environ.setdefault("CLIPFL_DATA", str(data))
    size = ["--workloads", "femnist", "--fleets", "paper", "--seeds", "1", "--rounds", "2",
            "--max-client-samples", "16"]  # fmt: skip
    base_runs, runs, out = tmp_path / "base", tmp_path / "variant", tmp_path / "out"
    assert paper.main([*size, "--runs", str(base_runs), "--out", str(tmp_path / "paper")]) == 0
    argv = [*size, "--set", "min_keep_ratio=0.4", "--strategies", "clip"]
    argv += ["--base-runs", str(base_runs), "--runs", str(runs), "--out", str(out)]
    assert variant.main(argv) == 0
    made = runs / "femnist-paper" / "runs" / "seed-0"
    assert [p.name for p in made.iterdir()] == ["clip"]  # none, deadline, ... are the base's
    assert json.loads((made / "clip" / "config.json").read_text())["min_keep_ratio"] == 0.4
    results = json.loads((out / "results.json").read_text())
    (pair,) = results["pairs"]
    assert pair["seeds_used"] == [0] and results["shared"] == [s for s in paper.STRATEGIES if s != "clip"]
    table = json.loads((tmp_path / "paper" / "results.json").read_text())["pairs"][0]["table"]
    assert pair["base"] == table  # the base table is the paper report's own
    assert pair["variant"]["strategies"]["none"] == table["strategies"]["none"]  # shared, not remade
    assert (
        results["adopt"] in (True, False) and results["decision"] == capsys.readouterr().out.split("\n")[-3]
    )
    report = (out / "report.md").read_text()
    assert "| clip | as it stands |" in report and "|  | min_keep_ratio=0.4 |" in report
    assert (out / "time_to_target.png").stat().st_size > 0
    # base runs made under other settings are refused before anything runs; so is --runs = --base-runs
    other = [*argv[: argv.index("16")], "17", *argv[argv.index("16") + 1 :]]
    assert variant.main(other) == 2
    assert "other settings (config.max_client_samples was 16" in capsys.readouterr().err
    same = [*argv[: argv.index(str(runs))], str(base_runs), *argv[argv.index(str(runs)) + 1 :]]
    assert variant.main(same) == 2
    assert "--runs is --base-runs" in capsys.readouterr().err
