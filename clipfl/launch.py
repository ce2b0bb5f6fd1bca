"""Local federation launcher: one server and N clients as separate OS processes on loopback.

The server binds a free port and announces it on stdout (``--events``); the launcher then starts
the clients, prints one line per round as the server reports it, and stops every process it started
when the run ends, fails, or is interrupted. Each process logs to ``RUN_DIR/logs/``.

Run ``python -m clipfl.launch --help`` for the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipfl.config import RunConfig, add_flags, load_toml, run_config, unknown_keys
from clipfl.errors import ClipflError, ConfigError
from clipfl.keys import provision
from clipfl.procs import ChildProcesses
from clipfl.shaping import parse_rate
from clipfl.sim.devices import choose_stragglers

__all__ = ["LaunchOptions", "build_parser", "client_argv", "config_flags", "free_port", "launch", "main"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LaunchOptions:
    """How the launcher emulates a heterogeneous fleet on this machine."""

    run_dir: Path
    host: str = "127.0.0.1"
    stragglers: int = 0
    straggler_ids: tuple[int, ...] | None = None
    network_straggler_ids: tuple[int, ...] | None = None
    straggler_slowdown: float = 1.0
    slowdown: float = 1.0
    upload_rate: str | None = None
    download_rate: str | None = None
    straggler_upload_rate: str | None = None
    straggler_download_rate: str | None = None
    shape: str = "app"
    quiet: bool = False
    heartbeat_timeout: float = 10.0
    http: str | None = None

    def __post_init__(self) -> None:
        if self.stragglers < 0:
            raise ConfigError(f"stragglers must be >= 0, got {self.stragglers}")
        if self.straggler_slowdown < 1 or self.slowdown < 1:
            raise ConfigError("slowdown factors must be >= 1")
        if self.shape not in ("tc", "app"):
            raise ConfigError(f"shape must be tc or app, got {self.shape!r}")
        for rate in (
            self.upload_rate,
            self.download_rate,
            self.straggler_upload_rate,
            self.straggler_download_rate,
        ):
            if rate is not None:
                parse_rate(rate)

    def straggler_set(self, config: RunConfig) -> frozenset[int]:
        """The straggling clients: ``straggler_ids`` if given, else a seeded choice of ``stragglers``."""
        if self.straggler_ids is not None:
            bad = [i for i in self.straggler_ids if not 0 <= i < config.clients]
            if bad:
                raise ConfigError(f"straggler ids {bad} are outside 0..{config.clients - 1}")
            return frozenset(self.straggler_ids)
        if self.stragglers > config.clients:
            raise ConfigError(f"stragglers ({self.stragglers}) must not exceed clients ({config.clients})")
        return choose_stragglers(config.clients, self.stragglers, config.seed)  # the simulator's too

    def slowdowns(self, config: RunConfig) -> list[float]:
        """Each client's slowdown: the base one, times ``straggler_slowdown`` for the stragglers."""
        slow = self.straggler_set(config)
        return [
            self.slowdown * (self.straggler_slowdown if i in slow else 1.0) for i in range(config.clients)
        ]

    def network_straggler_set(self, config: RunConfig) -> frozenset[int]:
        """The clients with the stragglers' link caps: ``network_straggler_ids``, else the stragglers.

        Giving both sets emulates a mixed fleet: some clients slow in compute, others in network.
        """
        if self.network_straggler_ids is None:
            return self.straggler_set(config)
        bad = [i for i in self.network_straggler_ids if not 0 <= i < config.clients]
        if bad:
            raise ConfigError(f"network straggler ids {bad} are outside 0..{config.clients - 1}")
        return frozenset(self.network_straggler_ids)

    def links(self, config: RunConfig) -> list[tuple[str | None, str | None]]:
        """Each client's (upload, download) caps as tc rates; None is unlimited."""
        slow = self.network_straggler_set(config)
        return [
            (
                (self.straggler_upload_rate or self.upload_rate) if i in slow else self.upload_rate,
                (self.straggler_download_rate or self.download_rate) if i in slow else self.download_rate,
            )
            for i in range(config.clients)
        ]


def client_argv(
    client_id: int,
    server: str,
    run_dir: Path,
    *,
    slowdown: float,
    heartbeat_timeout: float,
    flags: Sequence[str],
) -> list[str]:
    """The command line of one client process of a local federation."""
    return [
        sys.executable,
        "-m",
        "clipfl.client",
        "--client-id",
        str(client_id),
        "--server",
        server,
        "--run-dir",
        str(run_dir),
        "--slowdown",
        str(slowdown),
        "--heartbeat-timeout",
        str(heartbeat_timeout),
        *flags,
    ]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS's choice for port 0)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def config_flags(config: RunConfig) -> list[str]:
    """The command-line flags that reproduce ``config``."""
    argv: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _progress_line(event: dict[str, Any], rounds: int) -> str:
    return (
        f"round {event['round']:>3}/{rounds}  accuracy {event['test_accuracy']:.4f}  "
        f"loss {event['test_loss']:.4f}  {event['round_seconds']:6.2f} s  "
        f"{len(event['participants'])} clients"
        + (f", {len(event['failures'])} dropped" if event["failures"] else "")
    )


async def launch(config: RunConfig, options: LaunchOptions) -> dict[str, Any]:
    """Run the whole federation; return the server's summary."""
    links = options.links(config)
    if options.shape == "tc" and any(up or down for up, down in links):
        from clipfl.shaping import (
            LinkSpec,
            cleanup_stale,
            network_bench_async,
            new_run_id,
            require_root_netns,
        )

        require_root_netns()
        cleanup_stale()
        specs = [LinkSpec.parse(up, down) for up, down in links]
        async with network_bench_async(new_run_id(), specs) as bench:
            return await _run_federation(config, options, bench)
    return await _run_federation(config, options, None)


async def _run_federation(config: RunConfig, options: LaunchOptions, bench: Any) -> dict[str, Any]:
    run_dir = options.run_dir
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    slowdowns = options.slowdowns(config)
    links = options.links(config)
    identities: dict[int, Path] = {}
    if config.secagg != "off" and not config.secagg_trust_server and config.roster is None:
        # identities on, with no manual step: an operator key and a signed roster for this run only
        provisioned = provision(run_dir / "keys", range(config.clients), overwrite=True)
        identities = dict(provisioned.identities)
        config = dataclasses.replace(
            config, roster=str(provisioned.roster), operator_key=str(provisioned.operator_public)
        )
    flags = config_flags(config)
    host = bench.server_address if bench is not None else options.host
    procs = ChildProcesses()
    say = (lambda _: None) if options.quiet else (lambda line: print(line, flush=True))
    try:
        # A free port picked here lets the clients start beside the server instead of after it: they
        # queue their registration until it binds (ZeroMQ connects lazily), which halves start-up.
        address = f"tcp://{host}:{free_port(host)}"
        server = await procs.start(
            [
                sys.executable,
                "-m",
                "clipfl.server",
                "--bind",
                address,
                "--events",
                "--run-dir",
                str(run_dir),
                "--heartbeat-timeout",
                str(options.heartbeat_timeout),
                *(["--http", options.http] if options.http else []),
                *flags,
            ],
            logs / "server.log",
            stdout_pipe=True,
        )
        assert server.stdout is not None
        summary: dict[str, Any] | None = None
        started = time.perf_counter()
        for i in range(config.clients):
            argv = client_argv(
                i,
                address,
                run_dir,
                slowdown=slowdowns[i],
                heartbeat_timeout=options.heartbeat_timeout,
                flags=flags,
            )
            argv += ["--identity", str(identities[i])] if i in identities else []
            up, down = links[i]
            if bench is not None:
                argv = bench.exec_argv(i, argv)  # the bench's qdiscs carry the caps
            else:
                argv += ["--shape", "app"]
                argv += ["--upload-rate", up] if up else []
                argv += ["--download-rate", down] if down else []
            await procs.start(argv, logs / f"client-{i}.log")
        while line := await server.stdout.readline():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.get("event")
            if kind == "listening":
                n_slow = len(options.straggler_set(config) | options.network_straggler_set(config))
                say(
                    f"server on {event['address']}; {config.clients} clients started ({n_slow} stragglers"
                    + (f", shaping {options.shape}" if any(u or d for u, d in links) else "")
                    + ")"
                )
            elif kind == "http":
                say(f"dashboard: {event['url']}")
            elif kind == "start":
                say(f"all clients registered after {time.perf_counter() - started:.1f} s; training")
            elif kind == "round":
                say(_progress_line(event, config.rounds))
            elif kind == "summary":
                summary = {k: v for k, v in event.items() if k != "event"}
        code = await server.wait()
        if code != 0 or summary is None:
            tail = (logs / "server.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise ClipflError(f"the server exited with code {code}: " + (tail[-1] if tail else "no log"))
        await asyncio.gather(
            *(asyncio.wait_for(p.wait(), 15) for p in procs.procs[1:]), return_exceptions=True
        )
        return summary
    finally:
        await procs.stop()


# ------------------------------------------------------------------------------------------ CLI


def _id_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated client ids, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfl.launch",
        description="Run a whole local federation (server + clients as processes on loopback) and "
        "print where its run directory is.",
    )
    parser.add_argument("--config", help="TOML file: federation keys and launcher keys (flags win)")
    parser.add_argument("--run-dir", help="where to write the run (default: runs/<time>)")
    parser.add_argument("--host", help="loopback address to bind (default: 127.0.0.1)")
    parser.add_argument("--stragglers", type=int, help="number of clients that are slowed down (default: 0)")
    parser.add_argument(
        "--straggler-ids",
        type=_id_list,
        help="comma-separated ids of the stragglers (default: a seeded choice of --stragglers)",
    )
    parser.add_argument(
        "--network-straggler-ids",
        type=_id_list,
        help="ids that get the stragglers' link caps instead of the stragglers (a mixed fleet)",
    )
    parser.add_argument(
        "--straggler-slowdown", type=float, help="compute slowdown factor of the stragglers (default: 1)"
    )
    parser.add_argument("--slowdown", type=float, help="base compute slowdown of every client (default: 1)")
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        help="seconds of silence before a peer counts as gone (default: 10)",
    )
    parser.add_argument("--upload-rate", help="every client's upload cap, tc units such as 2mbit")
    parser.add_argument("--download-rate", help="every client's download cap, tc units such as 10mbit")
    parser.add_argument("--straggler-upload-rate", help="the stragglers' upload cap (default: --upload-rate)")
    parser.add_argument(
        "--straggler-download-rate", help="the stragglers' download cap (default: --download-rate)"
    )
    parser.add_argument(
        "--shape",
        choices=("tc", "app"),
        help="apply caps with Linux tc in network namespaces (root) or in the transport (default: app)",
    )
    parser.add_argument("--http", metavar="HOST:PORT", help="serve the HTTP API and live dashboard there")
    parser.add_argument("--quiet", action="store_true", help="print only the run directory")
    add_flags(parser, RunConfig, title="federation")
    return parser


_LAUNCH_KEYS = (
    "run_dir",
    "host",
    "stragglers",
    "straggler_ids",
    "network_straggler_ids",
    "straggler_slowdown",
    "slowdown",
    "upload_rate",
    "download_rate",
    "straggler_upload_rate",
    "straggler_download_rate",
    "shape",
    "heartbeat_timeout",
    "quiet",
    "http",
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        base = load_toml(args.config) if args.config else {}
        unknown = [k for k in unknown_keys(base, RunConfig) if k not in _LAUNCH_KEYS]
        if unknown:
            raise ConfigError(f"unknown keys in {args.config}: {', '.join(unknown)}")
        config = run_config(args, base)
        opts = {k: base[k] for k in _LAUNCH_KEYS if k in base}
        opts.update({k: getattr(args, k) for k in _LAUNCH_KEYS if getattr(args, k) not in (None, False)})
        run_dir = Path(opts.pop("run_dir", None) or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
        for key in ("straggler_ids", "network_straggler_ids"):
            if isinstance(opts.get(key), list):
                opts[key] = tuple(opts[key])
        options = LaunchOptions(run_dir=run_dir, **opts)
        summary = asyncio.run(launch(config, options))
    except ClipflError as exc:
        print(f"clipfl.launch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clipfl.launch: interrupted; every process stopped", file=sys.stderr)
        return 130
    if not options.quiet:
        print(
            f"done: {summary['rounds']} rounds in {summary['total_seconds']:.1f} s, "
            f"final accuracy {summary['final_accuracy']:.4f} (best {summary['best_accuracy']:.4f})"
        )
    print(f"run directory: {run_dir.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
