"""What secure aggregation adds to a round, end to end over real sockets (issue 13).

    python -m benchmarks.secure_overhead --clients 20 --rounds 7 --variants off,secagg+,secagg+:trust,secagg

Each variant is one ``python -m clipfl.launch`` federation (a server and one process per client on
loopback, identities provisioned by the launcher) on ``digits_mlp_wide``, a digits MLP with VGG-9's
1.47 M coordinates, so that the masks cost what VGG-9's do without VGG-9's training. A variant is a
``--secagg`` mode, ``:trust`` adding ``--secagg-trust-server`` (no identities, no signatures). Round 1
warms up; the figures are the median, min and max of the server's round seconds over the others, and
each secure variant's median over the plain one's. Writes ``overhead.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipfl.config import RunConfig
from clipfl.launch import config_flags
from clipfl.rundir import read_jsonl

__all__ = ["main"]

MODES = ("off", "secagg", "secagg+")


def _variant(text: str) -> tuple[str, bool]:
    mode, _, trust = text.partition(":")
    if mode not in MODES or trust not in ("", "trust"):
        raise SystemExit(f"benchmarks.secure_overhead: error: unknown variant {text!r} (MODE or MODE:trust)")
    return mode, trust == "trust"


def run_variant(text: str, clients: int, rounds: int, out: Path) -> dict[str, Any]:
    mode, trust = _variant(text)
    run_dir = out / text.replace(":", "-")
    config = RunConfig(
        dataset="digits",
        model="digits_mlp_wide",
        clients=clients,
        rounds=rounds,
        local_epochs=1,
        secagg=mode,
        secagg_trust_server=trust,
    )
    argv = [
        sys.executable,
        "-m",
        "clipfl.launch",
        "--run-dir",
        str(run_dir),
        "--quiet",
        *config_flags(config),
    ]
    subprocess.run(argv, check=True)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    times = [float(r["round_seconds"]) for r in rows if int(r["round"]) >= 2]
    return {
        "variant": text,
        "median_round_seconds": statistics.median(times),
        "min_round_seconds": min(times),
        "max_round_seconds": max(times),
        "rounds_timed": len(times),
        "stage_seconds_last_round": rows[-1].get("stage_seconds", {}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.secure_overhead", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7, help="round 1 warms up (default 7)")
    parser.add_argument("--variants", default="off,secagg+,secagg+:trust,secagg")
    parser.add_argument("--out", type=Path, default=Path("runs/secure-overhead"))
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        _variant(v)
    if "off" not in variants or args.rounds < 2:
        parser.error("--variants needs off (the plain baseline) and --rounds at least 2")
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_variant(v, args.clients, args.rounds, args.out) for v in variants]
    plain = next(r for r in results if r["variant"] == "off")["median_round_seconds"]
    for r in results:
        r["over_plain_seconds"] = r["median_round_seconds"] - plain
    command = "python -m benchmarks.secure_overhead " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"command": command, "clients": args.clients, "rounds": args.rounds, "variants": results}
    (args.out / "overhead.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Secure aggregation's cost per round, end to end",
        "",
        f"Command: `{command}`. {args.clients} clients, digits_mlp_wide (1,470,010 coordinates), rounds "
        f"2-{args.rounds}.",
        "",
        "| variant | median round (s) | [min, max] | over plain (s) |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['median_round_seconds']:.3f} | [{r['min_round_seconds']:.3f}, "
            f"{r['max_round_seconds']:.3f}] | {r['over_plain_seconds']:+.3f} |"
        )
    (args.out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
