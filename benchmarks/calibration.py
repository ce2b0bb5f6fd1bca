"""Is the simulator faithful? The same scenario live and simulated, compared per strategy (issue 11).

    python -m benchmarks.calibration --scenario digits-quick --strategies none,deadline,clip,ideal
    python -m benchmarks.calibration --live runs/a --sim runs/b     # compare two finished benchmarks

For each strategy of seed-matched runs: the simulated/live ratio of the mean round time (timed rounds),
the stragglers' mean keep ratio on both sides (timed rounds), and the test accuracy after each round.
The targets (issue 11): round times within 15 %, keep ratios within 0.05. It writes
``calibration.json`` and ``calibration.md`` into ``--out`` (or the ``--sim`` directory).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.report import IDEAL, RunRecord, load_run, mean_keep_ratio, straggler_ids

__all__ = ["compare", "main", "render"]

ROUND_TIME_TOLERANCE = 0.15
KEEP_RATIO_TOLERANCE = 0.05


def _runs(out: Path) -> dict[tuple[str, int], RunRecord]:
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return {
        (r["strategy"], int(r["seed"])): load_run(
            out / r["run_dir"], strategy=r["strategy"], seed=int(r["seed"])
        )
        for r in results["runs"]
        if r["status"] == "ok"
    }


def _explicit(out: Path) -> list[int] | None:
    s = json.loads((out / "results.json").read_text(encoding="utf-8")).get("stragglers", {})
    return sorted(set(s["ids"]) | set(s.get("network_ids") or ())) if s.get("ids") else None


def _figures(run: RunRecord, warmup: int, explicit: Sequence[int] | None) -> dict[str, Any]:
    timed = [r for r in run.rounds if int(r["round"]) > warmup]
    ids = [] if run.strategy == IDEAL else straggler_ids(run, explicit)
    fits = [
        float(row["fit_seconds"])
        for rows in run.clients.values()
        for row in rows
        if int(row["round"]) > warmup and row.get("fit_seconds") is not None
    ]
    return {
        "mean_round_seconds": statistics.fmean(float(r["round_seconds"]) for r in timed) if timed else None,
        "median_fit_seconds": statistics.median(fits) if fits else None,
        "straggler_keep_ratio": mean_keep_ratio(run, ids, lambda r: r > warmup),
        "accuracy": [float(r["test_accuracy"]) for r in sorted(run.rounds, key=lambda r: int(r["round"]))],
    }


def compare(live_dir: Path, sim_dir: Path) -> dict[str, Any]:
    """Per strategy and seed found in both benchmarks: the live and the simulated figures."""
    warmup = int(json.loads((sim_dir / "results.json").read_text(encoding="utf-8"))["warmup_rounds"])
    live, sim = _runs(live_dir), _runs(sim_dir)
    rows = []
    for key in sorted(live.keys() & sim.keys(), key=lambda k: (k[1], k[0])):
        a = _figures(live[key], warmup, _explicit(live_dir))
        b = _figures(sim[key], warmup, _explicit(sim_dir))
        ratio = None
        if a["mean_round_seconds"] and b["mean_round_seconds"] is not None:
            ratio = b["mean_round_seconds"] / a["mean_round_seconds"]
        fit_ratio = None
        if a["median_fit_seconds"] and b["median_fit_seconds"] is not None:
            fit_ratio = b["median_fit_seconds"] / a["median_fit_seconds"]
        keep_gap = None
        if a["straggler_keep_ratio"] is not None and b["straggler_keep_ratio"] is not None:
            keep_gap = b["straggler_keep_ratio"] - a["straggler_keep_ratio"]
        rows.append(
            {
                "strategy": key[0],
                "seed": key[1],
                "live": a,
                "sim": b,
                "round_time_ratio": ratio,
                "fit_time_ratio": fit_ratio,
                "keep_ratio_gap": keep_gap,
                "round_time_ok": ratio is not None and abs(ratio - 1) <= ROUND_TIME_TOLERANCE,
                "keep_ratio_ok": keep_gap is None or abs(keep_gap) <= KEEP_RATIO_TOLERANCE,
            }
        )
    return {"live": str(live_dir), "sim": str(sim_dir), "warmup_rounds": warmup, "rows": rows}


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(result: Mapping[str, Any]) -> str:
    lines = [
        "# Calibration: simulated against live",
        "",
        f"Live: `{result['live']}`; simulated: `{result['sim']}`. Timed rounds exclude the first "
        f"{result['warmup_rounds']}. Targets: round-time ratio within {ROUND_TIME_TOLERANCE:.0%} of 1, "
        f"keep ratios within {KEEP_RATIO_TOLERANCE}. Fit sim/live: the median fit of the timed rounds "
        "(every client), simulated over live: the devices' speed on both sides. A live fit lasts its "
        "slowdown times the CPU time it took on this machine, so the host's contention enters the live "
        "side there; what the round ratio adds to it is the protocol, the links and the server.",
        "",
        "| strategy | seed | mean round live (s) | sim (s) | sim/live | fit sim/live | "
        "stragglers' keep live | sim | accuracy per round live | sim |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in result["rows"]:
        a, b = r["live"], r["sim"]
        lines.append(
            f"| {r['strategy']} | {r['seed']} | {_f(a['mean_round_seconds'], '.3f')} | "
            f"{_f(b['mean_round_seconds'], '.3f')} | {_f(r['round_time_ratio'], '.3f')} | "
            f"{_f(r['fit_time_ratio'], '.3f')} | "
            f"{_f(a['straggler_keep_ratio'], '.3f')} | {_f(b['straggler_keep_ratio'], '.3f')} | "
            f"{' '.join(f'{x:.3f}' for x in a['accuracy'])} | {' '.join(f'{x:.3f}' for x in b['accuracy'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scenario", help="run this scenario with both engines first")
    parser.add_argument("--strategies", help="comma-separated (default: the scenario's and ideal)")
    parser.add_argument("--quick", action="store_true", help="the scenario's [quick] sizes")
    parser.add_argument("--out", help="output directory (with --scenario: live/ and sim/ go inside)")
    parser.add_argument("--live", help="a finished live benchmark's directory")
    parser.add_argument("--sim", help="a finished simulated benchmark's directory")
    args = parser.parse_args(argv)
    if args.scenario:
        out = Path(args.out or f"runs/calibration-{Path(args.scenario).stem}")
        extra = (["--strategies", args.strategies] if args.strategies else []) + (
            ["--quick"] if args.quick else []
        )
        for engine in ("live", "sim"):
            code = harness.main(
                ["--scenario", args.scenario, "--engine", engine, "--out", str(out / engine), *extra]
            )
            if code == 2:
                return 2
        live_dir, sim_dir = out / "live", out / "sim"
    elif args.live and args.sim:
        live_dir, sim_dir = Path(args.live), Path(args.sim)
        out = Path(args.out) if args.out else sim_dir
    else:
        parser.error("give --scenario, or both --live and --sim")
    result = compare(live_dir, sim_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = render(result)
    (out / "calibration.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
