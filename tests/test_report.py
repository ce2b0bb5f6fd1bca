"""Benchmark figures and reports from recorded run directories (issue 6, item 4): the warm-up is not
timed, time to target counts from its end, ratios are taken per seed against ``none``/``ideal`` of the
same seed and only then medianed, overruns are counted (the stragglers' apart) and flagged at the top
of the report. The run directories are small fixtures written by the tests, in the launcher's format."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report
from benchmarks.report import (
    RunFigures,
    figures_rows,
    load_run,
    render_markdown,
    run_figures,
    straggler_ids,
    summarize,
    write_report,
)

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(
    path: Path,
    rounds: Sequence[tuple[float, float, float]],
    clients: Mapping[int, Sequence[Mapping[str, Any]]] = {},  # read only
) -> Path:
    """A run directory: ``rounds`` as (round_seconds, elapsed_seconds, test_accuracy) from round 1."""
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as fh:
        for i, (secs, elapsed, acc) in enumerate(rounds, start=1):
            row = {"round": i, "round_seconds": secs, "elapsed_seconds": elapsed, "test_accuracy": acc}
            fh.write(json.dumps({**row, "test_loss": 1.0, "participants": [], "failures": {}}) + "\n")
    for cid, rows in clients.items():
        with open(path / f"client-{cid}.jsonl", "w") as fh:
            for client_row in rows:
                fh.write(json.dumps(client_row) + "\n")
    (path / "summary.json").write_text("{}")
    return path


def client_rows(slowdown: float, overruns: Sequence[bool], keep: Sequence[float] | None = None) -> list[dict]:
    return [
        {
            "round": i,
            "slowdown": slowdown,
            "emulation_overrun": late,
            "keep_ratio": 1.0 if keep is None else keep[i - 1],
            "fit_seconds": 1.0,
        }
        for i, late in enumerate(overruns, start=1)
    ]


ROUNDS = [(10.0, 10.0, 0.5), (2.0, 12.0, 0.7), (4.0, 16.0, 0.9), (3.0, 19.0, 0.85)]


def test_run_figures_skip_the_warmup_and_time_from_its_end(tmp_path: Path) -> None:
    run = load_run(write_run(tmp_path / "r", ROUNDS), strategy="clip", seed=2)
    f = run_figures(run, target=0.8, warmup_rounds=1)
    assert (f.strategy, f.seed, f.rounds) == ("clip", 2, 4)
    assert f.mean_round_seconds == 3.0  # (2 + 4 + 3) / 3: round 1 left out
    assert f.time_to_target_seconds == 6.0  # round 3 ends at 16 s, the warm-up at 10 s
    assert (f.final_accuracy, f.best_accuracy) == (0.85, 0.9)
    assert run_figures(run, target=0.8, warmup_rounds=0).time_to_target_seconds == 16.0
    assert run_figures(run, target=0.8, warmup_rounds=0).mean_round_seconds == 19.0 / 4
    assert run_figures(run, target=0.95, warmup_rounds=1).time_to_target_seconds is None
    assert run_figures(run, target=0.5, warmup_rounds=1).time_to_target_seconds == 0.0


def test_a_run_without_rounds_has_no_figures(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    f = run_figures(load_run(tmp_path / "empty", strategy="none", seed=0), target=0.5, warmup_rounds=1)
    assert f.rounds == 0 and f.mean_round_seconds is None and f.final_accuracy is None
    assert f.time_to_target_seconds is None and f.overruns == 0


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = write_run(tmp_path / "r", ROUNDS[:2])
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write('{"round": 3, "round_sec')
    assert len(load_run(path, strategy="none", seed=0).rounds) == 2


def test_overruns_are_counted_after_the_warmup_and_stragglers_apart(tmp_path: Path) -> None:
    clients = {
        0: client_rows(5.0, [True, True, False, False]),
        1: client_rows(5.0, [True, False, False, False]),
        2: client_rows(15.0, [True, False, True, True]),  # the straggler
        3: client_rows(1.0, [False, True, False, False]),  # not slowed: not in the denominator
    }
    run = load_run(write_run(tmp_path / "r", ROUNDS, clients), strategy="none", seed=0)
    f = run_figures(run, target=0.8, warmup_rounds=1, stragglers=[2])
    assert (f.overruns, f.overruns_warmup, f.overruns_stragglers) == (4, 3, 2)
    assert f.slowed_client_rounds == 9 and f.overrun_fraction == 4 / 9 and f.flagged
    assert run_figures(run, target=0.8, warmup_rounds=1, stragglers=[0, 1]).overruns_stragglers == 1


def test_straggler_ids_from_records_or_the_scenario(tmp_path: Path) -> None:
    clients = {i: client_rows(30.0 if i in (1, 4) else 10.0, [False]) for i in range(6)}
    run = load_run(write_run(tmp_path / "r", ROUNDS[:1], clients), strategy="none", seed=0)
    assert straggler_ids(run) == [1, 4]
    assert straggler_ids(run, [5, 0]) == [0, 5]
    same = {i: client_rows(10.0, [False]) for i in range(3)}
    ideal = load_run(write_run(tmp_path / "i", ROUNDS[:1], same), strategy="ideal", seed=0)
    assert straggler_ids(ideal) == []


def fig(
    strategy: str, seed: int, mean: float | None, ttt: float | None, acc: float, overruns: int = 0
) -> RunFigures:
    return RunFigures(
        strategy=strategy,
        seed=seed,
        rounds=5,
        mean_round_seconds=mean,
        time_to_target_seconds=ttt,
        final_accuracy=acc,
        best_accuracy=acc,
        overruns=overruns,
        overruns_warmup=0,
        overruns_stragglers=overruns // 2,
        slowed_client_rounds=40,
    )


FIGURES = [
    fig("none", 0, 10.0, 40.0, 0.5, overruns=1),
    fig("none", 1, 20.0, 80.0, 0.75),
    fig("none", 2, 40.0, None, 0.25),
    fig("clip", 0, 5.0, 20.0, 0.75, overruns=2),
    fig("clip", 1, 18.0, 60.0, 0.5),
    fig("clip", 2, 20.0, 30.0, 0.5),
    fig("ideal", 0, 4.0, 16.0, 0.75),
    fig("ideal", 1, 16.0, 50.0, 0.75),
    fig("ideal", 2, 16.0, 20.0, 0.75),
]


def test_ratios_are_per_seed_then_medianed() -> None:
    s = summarize(FIGURES)
    assert list(s) == ["none", "clip", "ideal"]
    clip = s["clip"]
    # per seed 1 - 5/10, 1 - 18/20, 1 - 20/40 -> median 0.5; the ratio of medians would give 0.1
    assert clip["speedup_round_time"] == 0.5
    assert clip["mean_round_seconds"] == 18.0
    # to target: seed 2 of none never reached it, so only seeds 0 and 1 count: median(0.5, 0.25)
    assert clip["speedup_time_to_target"] == 0.375
    assert clip["time_to_target_seconds"] == 30.0 and clip["target_reached"] == 3
    # final accuracy: +25, -25, +25 points
    assert clip["accuracy_delta_points"] == 25.0 and clip["final_accuracy"] == 0.5
    # against the ideal of the same seed: 5/4, 18/16, 20/16
    assert clip["round_time_vs_ideal"] == 1.25
    assert (clip["overruns"], clip["overruns_stragglers"], clip["overrun_fraction"]) == (2, 1, 2 / 120)
    none = s["none"]
    assert none["speedup_round_time"] == 0.0 and none["accuracy_delta_points"] == 0.0
    assert none["target_reached"] == 2 and none["time_to_target_seconds"] == 60.0
    assert s["ideal"]["round_time_vs_ideal"] == 1.0


def test_without_a_baseline_the_ratios_are_null() -> None:
    s = summarize([f for f in FIGURES if f.strategy != "none"])
    assert s["clip"]["speedup_round_time"] is None and s["clip"]["accuracy_delta_points"] is None
    assert s["clip"]["round_time_vs_ideal"] == 1.25


def results_for(figures: Sequence[RunFigures], **extra: Any) -> dict[str, Any]:
    runs = [
        {**row, "status": "ok", "message": "", "run_dir": f"runs/seed-{row['seed']}/{row['strategy']}"}
        for row in figures_rows(figures)
    ]
    return {
        "scenario": "fixture",
        "quick": True,
        "description": "A fixture.",
        "seeds": [0, 1, 2],
        "shaping": "app",
        "network_caps": True,
        "clients": 10,
        "rounds": 5,
        "cpu_count": 2,
        "target_accuracy": 0.8,
        "warmup_rounds": 1,
        "secagg": "secagg",
        "devices": {"slowdown": 5.0, "upload_rate": "100mbit", "download_rate": None},
        "stragglers": {
            "count": 2,
            "ids": [1, 4],
            "slowdown": 3.0,
            "upload_rate": "2mbit",
            "download_rate": None,
        },
        "interrupted": False,
        "strategies": summarize(figures),
        "runs": runs,
        **extra,
    }


def test_markdown_flags_overruns_at_the_top() -> None:
    text = render_markdown(results_for(FIGURES))
    head = text.split("## Figures")[0]
    assert "**Emulation overruns: 3**" in head
    assert "seed 0" not in head  # 1 and 2 of 40 late are under the flag threshold
    assert "**1 run(s) are flagged**" not in head
    flagged = [fig("clip", 0, 5.0, 20.0, 0.75, overruns=8), *FIGURES[1:]]
    assert "**1 run(s) are flagged** (over 5% of slowed fits late): clip seed 0." in render_markdown(
        results_for(flagged)
    )
    quiet = [fig(f.strategy, f.seed, f.mean_round_seconds, f.time_to_target_seconds, 0.5) for f in FIGURES]
    assert "overruns" not in render_markdown(results_for(quiet)).split("## Figures")[0].lower()


def test_markdown_states_shaping_base_slowdown_and_the_table() -> None:
    text = render_markdown(results_for(FIGURES), plots=["accuracy_vs_time.png"])
    assert "Shaping: **app: a token bucket" in text
    assert "Base compute slowdown: **5x** for every client; at least 5 recommended here" in text
    assert "Stragglers: 2 (clients 1, 4), compute 3x the base (15x), upload 2mbit" in text
    assert "| clip | 18.00 | 30.0 | 0.5000 | 0.5000 | +50.0 % | +37.5 % | +25.00 | 1.250x | 2 (1) |" in text
    assert "| none | 20.00 | 60.0 (2/3 reached) |" in text
    assert "![accuracy_vs_time](accuracy_vs_time.png)" in text
    tc = render_markdown(results_for(FIGURES, shaping="tc"))
    assert "Shaping: **tc: each client in its own network namespace" in tc


def test_markdown_lists_failed_runs_and_interruptions() -> None:
    results = results_for(FIGURES, interrupted=True)
    results["runs"].append(
        {"seed": 2, "strategy": "random", "status": "timeout", "message": "killed after 60 s", "run_dir": "x"}
    )
    head = render_markdown(results).split("## Figures")[0]
    assert "**1 run(s) failed** and are left out of the figures: random seed 2 (killed after 60 s)" in head
    assert "**Interrupted**" in head


def fixture_benchmark(out: Path) -> tuple[dict[str, Any], list[report.RunRecord]]:
    records, figures = [], []
    for seed in (0, 1):
        for strategy, scale, keep in (("none", 2.0, 1.0), ("clip", 1.0, 0.5), ("ideal", 0.5, 1.0)):
            rounds = [(scale * 2, scale * 2 * i, 0.2 * i) for i in range(1, 5)]
            clients = {
                i: client_rows(15.0 if i == 1 else 5.0, [False] * 4, [keep if i == 1 else 1.0] * 4)
                for i in range(3)
            }
            path = write_run(out / "runs" / f"seed-{seed}" / strategy, rounds, clients)
            record = load_run(path, strategy=strategy, seed=seed)
            records.append(record)
            figures.append(run_figures(record, target=0.5, warmup_rounds=1))
    return results_for(figures), records


def test_write_report_writes_json_markdown_and_three_plots(tmp_path: Path) -> None:
    results, records = fixture_benchmark(tmp_path)
    path = write_report(results, records, tmp_path)
    assert path == tmp_path / "report.md"
    assert json.loads((tmp_path / "results.json").read_text()) == results
    for name in ("accuracy_vs_time.png", "round_time.png", "straggler_keep_ratio.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG), name
        assert f"({name})" in path.read_text()
    contract = {
        "mean_round_seconds",
        "time_to_target_seconds",
        "final_accuracy",
        "speedup_round_time",
        "speedup_time_to_target",
        "accuracy_delta_points",
        "round_time_vs_ideal",
        "overruns",
    }
    for name, figures in results["strategies"].items():
        assert contract <= set(figures), name
    assert results["strategies"]["clip"]["speedup_round_time"] == 0.5
    assert results["strategies"]["none"]["round_time_vs_ideal"] == 4.0


def test_report_module_rebuilds_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, records = fixture_benchmark(tmp_path)
    write_report(results, records, tmp_path, plots=False)
    (tmp_path / "report.md").unlink()
    assert report.main([str(tmp_path)]) == 0
    assert (tmp_path / "report.md").exists() and (tmp_path / "round_time.png").exists()
    assert report.main([]) == 2
