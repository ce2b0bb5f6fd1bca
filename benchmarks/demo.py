"""``make demo``: the product's main job in about two minutes on the embedded digits.

A federation under secure aggregation with a compute straggler, run three ways side by side (the
harness's ``digits-quick`` scenario): waiting for everyone (``none``), CLIP (``clip``), and the ideal
fleet without the straggler. Each is a live launch by default: a server and six client processes over
ZeroMQ, the straggler's slowness emulated (``--engine sim`` runs the same in virtual time, in
seconds). It prints a short table (mean round time, time to the target accuracy, final accuracy,
speed-up over waiting) and writes the harness's report with its PNG plots. When the machine's own
load swamped the emulated slowdowns (emulation overruns), it says so and what to change, instead of
presenting stragglers that were not slow.

    python -m benchmarks.demo [--out runs/demo] [--seeds 1] [--engine live|sim]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import main as harness_main
from benchmarks.report import FLAG_OVERRUN_FRACTION

__all__ = ["main", "short_table", "verdict"]

SCENARIO = "digits-quick"
STRATEGIES = ("none", "clip", "ideal")


def _cell(value: Any, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def short_table(results: Mapping[str, Any]) -> str:
    """The figures a reader needs, one line per strategy (medians over the seeds)."""
    lines = [
        f"{'strategy':<9} {'mean round':>11} {'to target':>10} {'final acc':>10} {'vs waiting':>11}",
    ]
    for name in STRATEGIES:
        row = results["strategies"].get(name)
        if row is None:
            continue
        speedup = row.get("speedup_time_to_target")
        lines.append(
            f"{name:<9} {_cell(row['mean_round_seconds'], '.2f', ' s'):>11} "
            f"{_cell(row['time_to_target_seconds'], '.1f', ' s'):>10} "
            f"{_cell(row['final_accuracy'], '.4f'):>10} "
            f"{_cell(None if speedup is None else 100 * speedup, '+.0f', ' %'):>11}"
        )
    return "\n".join(lines)


def verdict(results: Mapping[str, Any]) -> str | None:
    """A warning when emulation overruns make the straggler's slowness untrustworthy, else None."""
    worst = max((row.get("overrun_fraction", 0.0) for row in results["strategies"].values()), default=0.0)
    if worst <= FLAG_OVERRUN_FRACTION:
        return None
    return (
        f"warning: {100 * worst:.0f} % of the slowed fits ran past their emulated time: this machine's "
        "own load, not the emulated devices, set the round times. Close other work, or raise the "
        "scenario's [devices] slowdown (benchmarks/scenarios/digits-quick.toml) and run again."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per strategy (default: 1)")
    parser.add_argument(
        "--engine",
        choices=("live", "sim"),
        default="live",
        help="live (default): real processes and sockets; sim: the same federations in virtual time",
    )
    args = parser.parse_args(argv)
    harness_args = ["--scenario", SCENARIO, "--strategies", ",".join(STRATEGIES), "--engine", args.engine]
    status = harness_main([*harness_args, "--seeds", str(args.seeds), "--out", str(args.out)])
    results_path = args.out / "results.json"
    if not results_path.exists():
        return status or 1
    results = json.loads(results_path.read_text())
    print()
    print(f"secure aggregation ({results.get('secagg', 'secagg')}), 1 compute straggler, {SCENARIO}:")
    print(short_table(results))
    print(f"plots and report: {args.out / 'report.md'}")
    warning = verdict(results)
    if warning:
        print(warning)
    return status


if __name__ == "__main__":
    sys.exit(main())
