"""The worker sub-command: one process that runs its share of the clients in one event loop.

    python -m benchmarks.scale _worker --server tcp://127.0.0.1:PORT --first 0 --count 50 --run JSON ...

Clients are tasks, not processes: a client process imports torch (about 300 MB resident), so 200 of
them do not fit a small machine; 4 processes of 50 clients do, and every client still has its own
ZeroMQ DEALER socket, heartbeats, secure-aggregation keys and training. The clients are built with
the public API only (``clipfl.Client``, ``ClientConfig``, ``RunConfig``, ``federation_data``,
``transport_factory``), from one load and one partition of the data per worker.

``worker_argv`` (the harness side) and ``worker_main`` (the worker side) spell the same flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.scale.federation import run_config_kwargs
from benchmarks.scale.options import ScaleOptions

__all__ = ["WORKER", "run_clients", "worker_argv", "worker_main"]

WORKER = "_worker"  # hidden sub-command of ``python -m benchmarks.scale``: one worker process


def worker_argv(
    opts: ScaleOptions, index: int, ids: range, address: str, deadline: float, min_samples: int | None
) -> list[str]:
    """The command line of worker ``index``, which runs clients ``ids`` against ``address``."""
    return [
        sys.executable,
        "-m",
        "benchmarks.scale",
        WORKER,
        "--server",
        address,
        "--first",
        str(ids.start),
        "--count",
        str(len(ids)),
        "--run",
        json.dumps(run_config_kwargs(opts)),
        "--heartbeat-timeout",
        str(opts.heartbeat_timeout),
        "--connect-timeout",
        str(opts.registration_timeout),
        "--deadline",
        str(deadline),
        "--result",
        str(opts.out / f"worker-{index}.json"),
        *(["--min-samples", str(min_samples)] if min_samples is not None else []),
    ]


async def run_clients(
    run_kwargs: dict[str, Any],
    ids: range,
    server: str,
    heartbeat_timeout: float,
    connect_timeout: float,
) -> dict[str, Any]:
    """Build the clients ``ids`` and run them all in this event loop until the server ends the run."""
    from clipfl import Client, ClientConfig, ClipflError, RunConfig, federation_data, transport_factory
    from transports.errors import TransportError  # what Client.run raises when the server is gone

    run = RunConfig(**run_kwargs)
    t0 = time.perf_counter()
    clients = []
    shares = federation_data(run, list(ids))  # one load and one partition for all of this worker's clients
    for i in ids:
        config = ClientConfig(
            client_id=i, server=server, heartbeat_timeout=heartbeat_timeout, connect_timeout=connect_timeout
        )
        clients.append(Client(run, config, shares[i], transport_factory(config)))
        await asyncio.sleep(0)
    build_seconds = time.perf_counter() - t0
    rounds_done: dict[str, int] = {}
    errors: dict[str, str] = {}

    async def one(client: Any) -> None:
        key = str(client.config.client_id)
        try:
            rounds_done[key] = await client.run()
        except (ClipflError, TransportError) as exc:  # ConnectionLost is a TransportError
            errors[key] = f"{type(exc).__name__}: {exc}"
            rounds_done[key] = len(client.rounds_done)

    async with asyncio.TaskGroup() as tg:
        for client in clients:
            tg.create_task(one(client))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "first": ids.start,
        "count": len(ids),
        "build_seconds": round(build_seconds, 2),
        "rounds_done": rounds_done,
        "errors": errors,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale _worker")
    parser.add_argument("--server", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--run", required=True, help="RunConfig keyword arguments as JSON")
    parser.add_argument("--heartbeat-timeout", type=float, required=True)
    parser.add_argument("--connect-timeout", type=float, required=True)
    parser.add_argument("--deadline", type=float, required=True, help="seconds before giving up")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--min-samples", type=int, help="lower the clients' partition floor to this")
    return parser


def worker_main(argv: list[str]) -> int:
    """Run one worker; write its result JSON; exit 1 (reason on stderr) when any client failed."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.server.startswith("tcp://127.") and not args.server.startswith("tcp://localhost"):
        parser.error(f"the scale benchmark stays on loopback; got --server {args.server}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    run_kwargs = json.loads(args.run)
    if args.min_samples is not None:
        run_kwargs["min_samples"] = args.min_samples  # the partition floor: see samples_per_client

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.deadline):
            return await run_clients(
                run_kwargs,
                range(args.first, args.first + args.count),
                args.server,
                args.heartbeat_timeout,
                args.connect_timeout,
            )

    result = asyncio.run(bounded())
    args.result.write_text(json.dumps(result) + "\n")
    if result["errors"]:  # the harness reads the last line of this log as the reason
        first = next(iter(result["errors"].items()))
        print(f"{len(result['errors'])} clients failed; client {first[0]}: {first[1]}", file=sys.stderr)
        return 1
    return 0
