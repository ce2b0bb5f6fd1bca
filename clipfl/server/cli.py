"""``python -m clipfl.server``: the server process, its flags, transport, HTTP API and resume."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from clipfl import logs
from clipfl.config import RunConfig, add_flags, load_toml, run_config
from clipfl.errors import ClipflError, ConfigError
from clipfl.keys import load_roster
from clipfl.rundir import Checkpoint, RunDir, load_checkpoint
from clipfl.server.driver import Server
from clipfl.server.view import OpsView
from clipfl.wire import Limits
from transports.errors import TransportConfigError

__all__ = ["build_parser", "main", "run_server"]

log = logging.getLogger("clipfl.server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfl.server",
        description="Run a clipfl federated-learning server: it waits for --clients clients, trains "
        "--rounds rounds and writes the run directory.",
    )
    parser.add_argument(
        "--bind",
        default="tcp://127.0.0.1:7700",
        help="ZeroMQ address to bind; port 0 picks a free one (default: tcp://127.0.0.1:7700)",
    )
    parser.add_argument("--run-dir", help="directory for metrics, checkpoints and the summary")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR after its last completed round (its config is reused)",
    )
    parser.add_argument("--config", help="TOML file with the same keys as the flags (flags win)")
    parser.add_argument(
        "--events", action="store_true", help="print one JSON object per event on stdout (for the launcher)"
    )
    parser.add_argument(
        "--http", metavar="HOST:PORT", help="serve the HTTP API and live dashboard there (off by default)"
    )
    parser.add_argument(
        "--curve-secret",
        metavar="FILE",
        help="CurveZMQ: the server's secret key file (from python -m clipfl.keys server DIR)",
    )
    parser.add_argument(
        "--curve-allow", metavar="DIR", help="CurveZMQ: directory of the allowed client public keys (*.key)"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=10.0,
        help="seconds of silence after which a client counts as gone (default: 10)",
    )
    logs.add_flags(parser)
    add_flags(parser, RunConfig, title="federation")
    return parser


async def run_server(
    config: RunConfig,
    bind: str,
    run_dir: RunDir | None,
    *,
    events: bool,
    heartbeat_timeout: float,
    http: str | None = None,
    curve: Any = None,
    resume: Checkpoint | None = None,
) -> dict[str, Any]:
    from clipfl.ops.api import parse_http_address, start_api
    from clipfl.ops.events import EventBus
    from transports.zmq import ZmqServerTransport

    bus = EventBus()

    def emit(event: dict[str, Any]) -> None:
        bus.publish(event)
        if events:
            print(json.dumps(event, default=str), flush=True)

    if curve is None:
        log.warning(
            "CurveZMQ is off: anyone who reaches %s can join as a new client, read the global model and "
            "make the server hold one multipart message of any size per connection (use --curve-secret "
            "and --curve-allow to admit only known clients)",
            bind,
        )
    limits = Limits()
    transport = ZmqServerTransport(
        heartbeat_timeout=heartbeat_timeout, curve=curve, limits=limits.for_transport()
    )
    async with transport:
        roster = None
        if config.roster is not None and config.operator_key is not None:
            roster = load_roster(config.roster, config.operator_key)
        server = Server(
            config, transport, run_dir=run_dir, limits=limits, on_event=emit, resume=resume, roster=roster
        )
        runner = None
        if http:
            runner, port = await start_api(OpsView(server), bus, *parse_http_address(http))
            host = parse_http_address(http)[0]
            log.info("HTTP API and dashboard on http://%s:%d/", host, port)
            emit({"event": "http", "url": f"http://{host}:{port}/"})
        try:
            return await server.serve(bind)
        finally:
            if runner is not None:
                await runner.cleanup()
            bus.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args)
    try:
        base = load_toml(args.config) if args.config else {}
        resume = None
        if args.resume:
            if args.run_dir and Path(args.run_dir).resolve() != Path(args.resume).resolve():
                raise ConfigError(
                    "--resume continues in its own directory: drop --run-dir or give the same one"
                )
            resume = load_checkpoint(args.resume)
            saved = {k: v for k, v in resume.config.items() if k in {f.name for f in fields(RunConfig)}}
            base = {**saved, **base}
            args.run_dir = args.resume
        config = run_config(args, base)
        run_dir = RunDir(args.run_dir) if args.run_dir else None
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        curve = None
        if args.curve_secret or args.curve_allow:
            if not (args.curve_secret and args.curve_allow):
                raise ConfigError("CurveZMQ needs both --curve-secret and --curve-allow")
            from clipfl.keys import load_curve_server

            curve = load_curve_server(args.curve_secret, args.curve_allow)
        summary = asyncio.run(
            run_server(
                config,
                args.bind,
                run_dir,
                events=args.events,
                heartbeat_timeout=args.heartbeat_timeout,
                http=args.http,
                curve=curve,
                resume=resume,
            )
        )
    except (ClipflError, TransportConfigError) as exc:
        print(f"clipfl.server: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    log.info("done in %.1f s: final accuracy %s", time.perf_counter() - t0, summary.get("final_accuracy"))
    return 0
