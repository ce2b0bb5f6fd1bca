"""One scale run: the server through its CLI, the workers when it listens, the sampler and the probes.

The server is ``python -m clipfl.server --events --http 127.0.0.1:0`` on loopback; its JSON events
on stdout drive everything: ``http`` starts the probes, ``listening`` starts the workers, each
``round`` marks the server's CPU and memory, ``summary`` ends the run. A worker that dies fails the
run at once (its last log line is the reason), rather than leaving the server to wait out its
registration timeout for clients that will never come. On success, failure, ``--timeout``, Ctrl-C
or SIGTERM every child is stopped, and the report is written all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.scale.children import Children
from benchmarks.scale.federation import run_config_kwargs, samples_per_client
from benchmarks.scale.options import ScaleOptions
from benchmarks.scale.probes import METRICS_INTERVAL, metrics_probe, poll, status_probe
from benchmarks.scale.record import Record
from benchmarks.scale.report import build_report, write_report
from benchmarks.scale.workers import worker_argv

__all__ = ["WORKER_GRACE", "run_scale", "split_ids"]

WORKER_GRACE = 60.0  # seconds the workers get to write their results once the server has said goodbye


def split_ids(clients: int, workers: int) -> list[range]:
    """Client ids ``0..clients-1`` in ``workers`` contiguous ranges whose sizes differ by at most one."""
    if not 1 <= workers <= clients:
        raise ValueError(f"need 1 <= workers <= clients, got {workers} workers for {clients} clients")
    base, extra = divmod(clients, workers)
    out, start = [], 0
    for w in range(workers):
        size = base + (1 if w < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def _server_argv(opts: ScaleOptions) -> list[str]:
    argv = [sys.executable, "-m", "clipfl.server", "--bind", "tcp://127.0.0.1:0", "--events"]
    argv += ["--http", "127.0.0.1:0", "--run-dir", str(opts.out / "run")]
    argv += ["--heartbeat-timeout", str(opts.heartbeat_timeout)]
    for key, value in run_config_kwargs(opts).items():
        if isinstance(value, bool):
            argv += ["--" + key.replace("_", "-")] if value else []
        else:
            argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


async def _sample_forever(rec: Record, interval: float) -> None:
    """Server (and workers, summed) every ``interval`` seconds until cancelled."""
    while True:
        rec.sample()
        await asyncio.sleep(interval)


def _last_line(path: Path) -> str:
    """The last non-empty line of a small log (where Python puts the exception that ended a process)."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


class _WorkerFailed(Exception):
    """A worker process died before the run was over (its log says why)."""


async def _watch_worker(rec: Record, index: int, proc: asyncio.subprocess.Process, log_path: Path) -> None:
    """Fail the run at once when worker ``index`` exits with an error, instead of letting the server
    wait out its registration timeout for clients that will never come."""
    code = await proc.wait()
    if code != 0 and rec.summary is None:
        raise _WorkerFailed(f"worker {index} exited with code {code}: {_last_line(log_path)}")


async def _follow_server(
    opts: ScaleOptions,
    rec: Record,
    children: Children,
    server: asyncio.subprocess.Process,
    tg: asyncio.TaskGroup,
    stop_polling: asyncio.Event,
    background: list[asyncio.Task[None]],
) -> None:
    """Read the server's JSON events; start the workers and the probes when it is ready for them."""
    assert server.stdout is not None
    while line := await server.stdout.readline():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = event.get("event")
        if kind == "http":
            rec.http_url = str(event["url"])
            base = rec.http_url
            for path, interval, sink, interpret in (
                ("api/status", opts.http_interval, rec.probes, status_probe),
                ("metrics", METRICS_INTERVAL, rec.metric_probes, metrics_probe),
            ):
                background.append(
                    tg.create_task(poll(rec.now, base + path, interval, stop_polling, sink, interpret))
                )
        elif kind == "listening":
            rec.mark("listening")
            deadline = opts.timeout - rec.now()
            for index, ids in enumerate(split_ids(opts.clients, opts.workers)):
                argv = worker_argv(opts, index, ids, str(event["address"]), deadline, rec.min_samples)
                log_path = opts.out / f"worker-{index}.log"
                proc = await children.start(argv, log_path)
                rec.worker_pids.append(proc.pid)
                background.append(tg.create_task(_watch_worker(rec, index, proc, log_path)))
        elif kind == "start":
            rec.mark("start")
        elif kind == "round":
            rnd = int(event["round"])
            rec.mark(f"round-{rnd}")
            rec.rounds.append({k: v for k, v in event.items() if k != "event"})
            if rnd >= opts.rounds:
                rec.training_over = rec.now()
                stop_polling.set()
        elif kind == "summary":
            rec.summary = {k: v for k, v in event.items() if k != "event"}
    stop_polling.set()
    rec.server_exit = await server.wait()


async def _observe(opts: ScaleOptions, rec: Record, children: Children) -> None:
    server = await children.start(_server_argv(opts), opts.out / "server.log", stdout_pipe=True)
    rec.server_pid = server.pid
    stop_polling = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    try:
        async with asyncio.TaskGroup() as tg:
            background.append(tg.create_task(_sample_forever(rec, opts.sample_interval), name="sampler"))
            try:
                await _follow_server(opts, rec, children, server, tg, stop_polling, background)
                if rec.summary is not None:  # the workers end when the server says goodbye
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(WORKER_GRACE):
                            await asyncio.gather(*(p.wait() for p in children.procs[1:]))
            finally:
                stop_polling.set()
                for task in background:
                    task.cancel()
    except BaseExceptionGroup as group:
        failed = group.subgroup(_WorkerFailed)
        if failed is None:
            raise
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def _worker_results(opts: ScaleOptions) -> list[dict[str, Any]]:
    out = []
    for index in range(opts.workers):
        path = opts.out / f"worker-{index}.json"
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            out.append({"worker": index, "missing": True})
    return out


async def run_scale(opts: ScaleOptions) -> dict[str, Any]:
    """Run the benchmark; return the report (also written as JSON and Markdown under ``opts.out``)."""
    opts.out.mkdir(parents=True, exist_ok=True)
    for stale in opts.out.glob("worker-*.json"):
        stale.unlink()
    rec = Record(t0=time.monotonic(), min_samples=samples_per_client(opts))
    children = Children()
    status, message = "ok", ""
    load_start = os.getloadavg()
    try:
        async with asyncio.timeout(opts.timeout):
            await _observe(opts, rec, children)
    except TimeoutError:
        status, message = "timeout", f"not finished within --timeout {opts.timeout:g} s"
    except _WorkerFailed as exc:
        status, message = "failed", str(exc)
    except asyncio.CancelledError:
        status, message = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
        raise
    finally:
        await children.stop(grace=10.0)
        rec.workers = _worker_results(opts)
        report = build_report(opts, rec, status, message, load_start)
        write_report(opts, report)
    return report
