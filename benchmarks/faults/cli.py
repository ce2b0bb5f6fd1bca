"""``python -m benchmarks.faults``: the flags, the plan of runs, and the two output files.

python -m benchmarks.faults                      # both modes, clean + each of the 8 attacks
python -m benchmarks.faults --quick              # CI: secagg+ only, clean + strangers + kills
python -m benchmarks.faults --modes off --attacks malformed,evict --out runs/f
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.faults.attacks import THREAD_ATTACKS
from benchmarks.faults.campaign import Case, run_mode
from benchmarks.faults.federation import FederationSpec
from benchmarks.faults.kills import ASYNC_ATTACKS
from benchmarks.faults.report import render_markdown, verdicts

__all__ = ["ATTACKS", "BUDGETS", "build_parser", "main", "plan"]

REPO = Path(__file__).resolve().parents[2]
MODES = ("off", "secagg+")

ATTACKS = {
    "malformed": "(1) the 43-byte 2-frame killer, ~170 structured malformed messages, then random fuzz",
    "impersonate": "(2) DEALERs presenting registered clients' routing ids: read off the loopback wire "
    "(ZMTP READY, needs CAP_NET_RAW), then guessed; each sends a poisoned FitRes",
    "evict": "(3) Register of each connected client's id without its token and with a forged one, "
    "repeated; a num_samples = 10**9 claim for a free id before the clients come",
    "ghost": "(4) one connection registers under one free id then another (twice), goes silent, and the "
    "clients start once the server has forgotten it; then rebinding onto held ids during training",
    "oversized": "(5) one message of many 1-byte frames, one over the 512 MiB total in frames under the "
    "frame cap, one frame over the cap (full run: also a larger total)",
    "log-flood": "(6) random 1-64 KiB messages from many connections; log growth per garbage byte",
    "kill-client": "(7) a client SIGKILLed mid-round, restarted after the heartbeat timeout; the run has "
    "10 more rounds so that it can rejoin (accuracy compared at the clean run's last round)",
    "kill-server": "(8) the server SIGKILLed mid-round and resumed with --resume RUN_DIR",
    "strangers": "(quick) attacks 1-6 at once, with smaller budgets",
    "kills": "(quick) 7 then 8 in one run",
}

BUDGETS: dict[str, dict[str, int]] = {
    "full": {
        "structured_reps": 20,
        "fuzz": 50_000,
        "impersonations": 100,
        "guesses": 2_000,
        "evictions": 200,
        "forget_seconds": 5,
        "ghost_reps": 20,
        "many_frames": 1_000_000,
        "frame_mib": 255,
        "total_mib": 600,
        "huge_mib": 1530,
        "flood_peers": 64,
        "flood_mib": 25,
    },
    "quick": {
        "structured_reps": 3,
        "fuzz": 5_000,
        "impersonations": 30,
        "guesses": 200,
        "evictions": 30,
        "forget_seconds": 4,
        "ghost_reps": 5,
        "many_frames": 100_000,
        "frame_mib": 255,
        "total_mib": 600,
        "huge_mib": 0,
        "flood_peers": 16,
        "flood_mib": 4,
    },
}


_EXTRA_ROUNDS = {"kill-client": 10, "kills": 2}
"""Rounds a crash case runs beyond the others: the restarted client must find rounds left to rejoin, and
the server must still have rounds to go when its SIGKILL lands (one that had just finished its last
round, on a loaded machine, could not be resumed)."""


def plan(quick: bool, modes: list[str], attacks: list[str] | None) -> tuple[list[str], list[Case]]:
    """The modes and the cases of the campaign (the clean run is added per mode)."""
    if quick:
        names = attacks or ["strangers", "kills"]
        modes = modes or ["secagg+"]
    else:
        names = attacks or [*THREAD_ATTACKS, "kill-client", "kill-server"]
        modes = modes or list(MODES)
    cases = []
    for name in names:
        if name == "strangers":
            cases.append(Case(name=name, threads=tuple(THREAD_ATTACKS)))
        elif name in THREAD_ATTACKS:
            cases.append(Case(name=name, threads=(name,)))
        elif name in ASYNC_ATTACKS:
            cases.append(Case(name=name, action=name, extra_rounds=_EXTRA_ROUNDS.get(name, 0)))
        else:
            raise SystemExit(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    return modes, cases


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.faults",
        description="Run live digits federations clean and under each attack of issue 14; "
        "write results.json and report.md.",
    )
    parser.add_argument("--out", type=Path, help="output directory (default: runs/faults-<time>)")
    parser.add_argument("--quick", action="store_true", help="the CI variant: secagg+ only, 3 runs")
    parser.add_argument("--modes", help=f"comma-separated --secagg modes (default: {','.join(MODES)})")
    parser.add_argument("--attacks", help=f"comma-separated attacks (known: {', '.join(ATTACKS)})")
    parser.add_argument("--rounds", type=int, help="rounds per run (default: 3 quick, 6 full)")
    parser.add_argument("--time-limit", type=float, default=150.0, help="seconds per run (default: 150)")
    return parser


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


async def _campaign(args: argparse.Namespace, out: Path, command: str) -> dict[str, Any]:
    modes, cases = plan(args.quick, _split(args.modes), _split(args.attacks) or None)
    budget = BUDGETS["quick" if args.quick else "full"]
    rounds = args.rounds or (3 if args.quick else 6)
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S"), time.monotonic()
    results: dict[str, Any] = {"command": command, "started": started, "quick": args.quick, "modes": []}
    for mode in modes:
        spec = FederationSpec(secagg=mode, rounds=rounds)
        results["federation"] = (
            f"{spec.clients} clients, {spec.rounds} rounds on digits, round timeout "
            f"{spec.round_timeout:g} s, heartbeat timeout {spec.heartbeat_timeout:g} s"
        )
        results["spec"] = asdict(spec)
        say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        results["modes"].append(
            await run_mode(
                mode, cases, spec=spec, out=out, budget=budget, time_limit=args.time_limit, say=say
            )
        )
    results["wall_seconds"] = round(time.monotonic() - t0, 1)
    results["budget"] = budget
    results["attacks"] = {c.name: ATTACKS[c.name] for c in cases}
    results["verdicts"] = {m["secagg"]: verdicts(m["rows"]) for m in results["modes"]}
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or Path("runs") / time.strftime("faults-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    command = "python -m benchmarks.faults " + shlex.join(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C: cleanup runs
    try:
        results = asyncio.run(_campaign(args, out, command))
    except KeyboardInterrupt:
        print("benchmarks.faults: interrupted; every process was stopped", file=sys.stderr)
        return 130
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.md").write_text(render_markdown(results))
    print(out / "report.md")
    failed = any(results["verdicts"].values())
    return 1 if failed else 0
