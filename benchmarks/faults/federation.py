"""One live federation on loopback through clipfl's CLI: a server, N clients, and what they did.

The server runs as ``python -m clipfl.server --events --run-dir``; its JSON events on stdout say when
it listens, when training starts and when each round ends. Its memory is read from ``/proc`` (VmHWM,
the kernel's own peak, sampled until it exits). Clients are ``python -m clipfl.client`` processes.
Every process is started through ``benchmarks.scale.children.Children`` (SIGTERM, then SIGKILL, and
each child dies with this process), so no run leaves one behind, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.scale.children import Children

__all__ = ["FederationSpec", "LiveFederation", "peak_rss"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationSpec:
    """The federation every run of the campaign trains: small, on the embedded digits."""

    secagg: str
    clients: int = 4
    rounds: int = 4
    round_timeout: float = 20.0
    heartbeat_timeout: float = 3.0
    seed: int = 0
    client_slowdown: float = 30.0  # digits fits take ~50 ms of CPU: stretched, a round lasts ~1.5 s

    def flags(self) -> list[str]:
        return [
            *("--dataset", "digits", "--clients", str(self.clients), "--rounds", str(self.rounds)),
            *("--secagg", self.secagg, "--seed", str(self.seed)),
            # attacks by strangers on the network, not by the server: the server is the defender here
            *(["--secagg-trust-server"] if self.secagg != "off" else []),
            *("--round-timeout", f"{self.round_timeout:g}", "--unmask-timeout", "10"),
            *("--registration-timeout", "90"),
        ]


def _free_port() -> int:
    """A TCP port on loopback that nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss(pid: int, field: str = "VmHWM") -> int | None:
    """The peak resident set of ``pid`` in bytes (``VmHWM``; ``VmRSS`` for the current one), or None
    once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


@dataclass(slots=True)
class ServerLife:
    """One server process (the first, or one resumed after a kill)."""

    argv: list[str]
    proc: asyncio.subprocess.Process
    peak_rss: int = 0
    returncode: int | None = None
    killed: bool = False


@dataclass(slots=True)
class Observed:
    address: str | None = None
    rounds_seen: list[int] = field(default_factory=list)
    summary: dict[str, Any] | None = None


class LiveFederation:
    """Start, watch and stop one federation; attacks call ``kill_client``/``kill_server``."""

    def __init__(self, spec: FederationSpec, out: Path) -> None:
        self.spec = spec
        self.out = out
        self.run_dir = out / "run"
        self.children = Children()
        self.servers: list[ServerLife] = []
        self.clients: dict[int, list[asyncio.subprocess.Process]] = {}
        self.seen = Observed()
        self.listening = asyncio.Event()
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self._round = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"  # chosen here: clients may start with the server

    # ---------------------------------------------------------------------------- the server

    async def start_server(self, *, resume: bool = False, wait: bool = True) -> None:
        """Start the server (``resume``: from the run directory) on this federation's port; with
        ``wait``, until it listens."""
        bind = self.address
        where = (
            ["--resume", str(self.run_dir)]
            if resume
            else ["--run-dir", str(self.run_dir), *self.spec.flags()]
        )
        argv = [sys.executable, "-m", "clipfl.server", "--bind", bind, "--events", *where]
        argv += ["--heartbeat-timeout", f"{self.spec.heartbeat_timeout:g}"]
        self.out.mkdir(parents=True, exist_ok=True)
        self.listening.clear()
        proc = await self.children.start(argv, self.out / "server.log", stdout_pipe=True)
        life = ServerLife(argv=argv, proc=proc)
        self.servers.append(life)
        self._tasks.append(asyncio.create_task(self._read_events(life)))
        self._tasks.append(asyncio.create_task(self._sample_rss(life)))
        if wait:
            await self.listening.wait()

    async def _read_events(self, life: ServerLife) -> None:
        assert life.proc.stdout is not None
        with open(self.out / "events.jsonl", "ab") as sink:  # noqa: ASYNC230 - small local appends
            while line := await life.proc.stdout.readline():
                sink.write(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = event.get("event") if isinstance(event, dict) else None
                if kind == "listening":
                    self.seen.address = str(event["address"])
                    self.listening.set()
                elif kind == "start":
                    self.started.set()
                elif kind == "round":
                    async with self._round:
                        self.seen.rounds_seen.append(int(event["round"]))
                        self._round.notify_all()
                elif kind == "summary":
                    self.seen.summary = event
        life.returncode = await life.proc.wait()
        if not life.killed:
            self.finished.set()
            self.listening.set()  # a server that died before listening must not hang the campaign

    async def _sample_rss(self, life: ServerLife) -> None:
        while life.proc.returncode is None:
            peak = peak_rss(life.proc.pid)
            if peak is not None:
                life.peak_rss = max(life.peak_rss, peak)
            await asyncio.sleep(0.05)

    def server_rss(self) -> int | None:
        """The live server's resident set now, in bytes."""
        return peak_rss(self.servers[-1].proc.pid, "VmRSS") if self.servers else None

    async def wait_round(self, number: int) -> None:
        """Until round ``number`` has ended (or the run has)."""
        async with self._round:
            await self._round.wait_for(lambda: number in self.seen.rounds_seen or self.finished.is_set())

    async def kill_server(self) -> None:
        """SIGKILL the live server (no goodbye, no flush): what a power cut does."""
        life = self.servers[-1]
        life.killed = True
        with contextlib.suppress(ProcessLookupError):
            life.proc.send_signal(signal.SIGKILL)
        await life.proc.wait()

    # --------------------------------------------------------------------------- the clients

    async def start_client(self, client_id: int) -> None:
        argv = [sys.executable, "-m", "clipfl.client", "--server", self.address]
        argv += ["--client-id", str(client_id), "--run-dir", str(self.run_dir), *self.spec.flags()]
        argv += ["--heartbeat-timeout", f"{self.spec.heartbeat_timeout:g}", "--connect-timeout", "60"]
        argv += ["--slowdown", f"{self.spec.client_slowdown:g}"]
        proc = await self.children.start(argv, self.out / f"client-{client_id}.log")
        self.clients.setdefault(client_id, []).append(proc)

    async def start_clients(self) -> None:
        for client_id in range(self.spec.clients):
            await self.start_client(client_id)

    async def kill_client(self, client_id: int) -> None:
        proc = self.clients[client_id][-1]
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    # ----------------------------------------------------------------------------- the end

    async def wait_finished(self) -> None:
        await self.finished.wait()
        for procs in self.clients.values():  # told "training finished", each exits on its own
            for proc in procs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 15)

    async def stop(self) -> None:
        await self.children.stop(grace=3.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def metrics(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def client_exits(self) -> dict[int, list[int | None]]:
        return {cid: [p.returncode for p in procs] for cid, procs in self.clients.items()}

    def server_log_bytes(self) -> int:
        path = self.out / "server.log"
        return path.stat().st_size if path.exists() else 0
