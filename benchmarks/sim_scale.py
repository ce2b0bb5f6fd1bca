"""Protocol-only simulations of large federations: round time and memory at 1,000 or 10,000 clients.

    python -m benchmarks.sim_scale --clients 1000 --rounds 2 --secagg secagg+
    python -m benchmarks.sim_scale --clients 10000 --rounds 1 --secagg secagg+ --out runs/scale-10k

No client trains (every update is zero, its time still charged from its MACs on its device); every
client runs the real engine and the real SecAgg+ protocol (real keys, shares, masks and the exact
sum) and every message is really encoded. It prints and writes (``--out``) one JSON object: the
simulated mean round time, the wall time per round, and the process's peak resident memory, which
holds the server *and* every simulated client (an upper bound of the server's own).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from clipfl import ClipflError, federation_config, load_cost_model, simulate, straggler_fleet
from clipfl.sim import SECAGG_COSTS, protocol_shares

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sim_scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--secagg", default="secagg+", choices=("off", "secagg", "secagg+"))
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--samples", type=int, default=100, help="samples each client claims (default 100)")
    parser.add_argument("--slowdown", type=float, default=1.0, help="every device's slowdown (default 1)")
    parser.add_argument("--server-rate", type=float, help="the server's link in bit/s (default: not capped)")
    parser.add_argument(
        "--secagg-cost",
        choices=tuple(SECAGG_COSTS),
        default="real",
        help="real (default): run the cryptography; model: only charge it (same results, for 10,000 clients)",
    )
    parser.add_argument("--out", help="a run directory to write (default: none)")
    args = parser.parse_args(argv)
    try:
        config = federation_config(
            {
                "dataset": args.dataset,
                "clients": args.clients,
                "rounds": args.rounds,
                "secagg": args.secagg,
                "max_weight": 1000,
                "seed": 0,
            }
        )
        costs = load_cost_model()
        fleet = straggler_fleet(
            args.clients, base_speed=costs.train_speed(config.model_name), slowdown=args.slowdown
        )
        started = time.monotonic()
        summary = simulate(
            config,
            fleet,
            run_dir=args.out,
            cost_model=costs,
            server_bps=args.server_rate,
            shares=protocol_shares(config, args.samples),
            train=False,
            secagg_cost=args.secagg_cost,
        )
        wall = time.monotonic() - started
    except ClipflError as exc:
        print(f"benchmarks.sim_scale: error: {exc}", file=sys.stderr)
        return 2
    result = {
        "clients": args.clients,
        "rounds": args.rounds,
        "secagg": args.secagg,
        "secagg_cost": args.secagg_cost,
        "model": config.model_name,
        "samples_per_client": args.samples,
        "simulated_mean_round_seconds": summary["mean_round_seconds"],
        "wall_seconds": wall,
        "wall_seconds_per_round": wall / args.rounds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        (Path(args.out) / "scale.json").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
