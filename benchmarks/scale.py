"""Scale benchmark (issue 7, item 6): hundreds of lightweight clients against one server on one machine.

    python -m benchmarks.scale --clients 200 --rounds 3 [--workers 4] [--secagg secagg+] \\
        [--json FILE] [--out DIR]

One real server process (``python -m clipfl.server --events --http 127.0.0.1:0``) and a few *worker*
processes, each running its share of the clients as ``clipfl.client.Client`` objects in one event
loop (each with its own ZeroMQ DEALER socket, one torch thread). The model is the tiny ``digits_mlp``
(4,810 parameters) with one local epoch, so what is measured is the federation's own cost: the
server's event loop, secure aggregation (SecAgg+ with ``k`` about ``log2 n``), the transport.

Why it is built this way:

* **Clients as tasks, not processes.** A client process imports torch (about 300 MB resident), so
  200 of them do not fit this machine; 4 processes of 50 clients do, and every client still has its
  own socket, heartbeats, secure-aggregation keys and training.
* **The server is measured from outside.** Its resident memory (``VmRSS``, and the kernel's own peak
  ``VmHWM``) and CPU time (``utime + stime``) are read from ``/proc/PID`` every ``--sample-interval``
  seconds and at every event it prints, so per-round CPU is exact at round boundaries. Round times
  and secure-aggregation stage times are the server's own (its ``round`` events).
* **Responsiveness is probed, not assumed.** ``GET /api/status`` every ``--http-interval`` seconds,
  one request at a time, from registration to the last round: latency median, p95, max and failures.
  ``GET /metrics`` every second checks the Prometheus counter under load (the server closes its API
  right after its last round, so the last value a scraper can see is ``rounds - 1``).
* **200 clients need a lower partition floor.** ``Client`` splits the data with ``make_partition``'s
  default of 10 samples per client, and digits has 1,438 training samples (143 clients at most); the
  workers lower that floor (``RunConfig.min_samples``) to the even share (7 for 200), and the report
  says so (``samples_per_client``).
* **A worker that dies fails the run at once** (its last log line is the reason), rather than
  leaving the server to wait out its registration timeout for clients that will never come.
* **Everything it starts is stopped**: on success, failure, ``--timeout``, Ctrl-C or SIGTERM the
  children get SIGTERM, then SIGKILL after a grace period; each child also asks the kernel for
  SIGTERM if the harness dies first (``PR_SET_PDEATHSIG``). Loopback only.

The JSON (``--json``, default ``OUT/scale.json``) and ``OUT/scale.md`` are written even when the run
fails or times out, with ``status`` saying which; ``all_rounds_completed`` is true only when every
round finished with every client taking part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import itertools
import json
import logging
import os
import platform
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipfl.procs import ChildProcesses

__all__ = [
    "HttpProbe",
    "ProcSample",
    "ScaleOptions",
    "build_parser",
    "command_line",
    "latency_summary",
    "main",
    "metrics_probe",
    "parse_proc_stat_cpu",
    "parse_proc_status",
    "percentile",
    "read_proc",
    "render_markdown",
    "rounds_completed",
    "run_scale",
    "samples_per_client",
    "split_ids",
    "status_probe",
]

MIB = 1 << 20
_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
WORKER_GRACE = 60.0  # seconds the workers get to write their results once the server has said goodbye
METRICS_INTERVAL = 1.0  # seconds between GET /metrics, as a Prometheus server would scrape (but faster)
_WORKER = "_worker"  # hidden sub-command: one worker process of the benchmark


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleOptions:
    """One scale run. Timeouts are generous: on a shared 2-core machine 200 clients take a while to
    import, build and register, and the server must not give up on them before they do."""

    clients: int = 200
    rounds: int = 3
    workers: int = 4
    secagg: str = "secagg+"
    out: Path = Path("runs/scale")
    json_path: Path | None = None
    seed: int = 0
    registration_timeout: float = 600.0
    round_timeout: float = 600.0
    heartbeat_timeout: float = 30.0
    timeout: float = 1800.0
    sample_interval: float = 0.5
    http_interval: float = 0.2

    def __post_init__(self) -> None:
        from clipfl.errors import ConfigError

        if self.clients < 2:
            raise ConfigError(f"clients must be >= 2 (secure aggregation needs two), got {self.clients}")
        if not 1 <= self.workers <= self.clients:
            raise ConfigError(f"workers must be in 1..{self.clients}, got {self.workers}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.secagg not in ("off", "secagg", "secagg+"):
            raise ConfigError(f"secagg must be off, secagg or secagg+, got {self.secagg!r}")
        for name in (
            "registration_timeout",
            "round_timeout",
            "heartbeat_timeout",
            "timeout",
            "sample_interval",
            "http_interval",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")

    @property
    def report_json(self) -> Path:
        return self.json_path or self.out / "scale.json"


# --------------------------------------------------------------------------------- pure helpers


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


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) with linear interpolation between order statistics (NumPy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def parse_proc_status(text: str) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (bytes) and ``Threads`` from the text of ``/proc/PID/status``."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, _, unit = value.strip().partition(" ")
            if unit != "kB":
                raise ValueError(f"unexpected unit {unit!r} for {key} in /proc status")
            found[key] = int(number) * 1024
        elif key == "Threads":
            found[key] = int(value.strip())
    return found


def parse_proc_stat_cpu(text: str, ticks_per_second: int = _TICKS) -> float:
    """User + system CPU seconds from the text of ``/proc/PID/stat``.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself, so the
    fields are counted after the *last* ``)``: utime and stime are fields 14 and 15 of proc(5).
    """
    rest = text[text.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_second


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One look at a process: seconds since the benchmark started, memory, CPU, threads, open files."""

    at: float
    rss_bytes: int
    peak_rss_bytes: int
    cpu_seconds: float
    threads: int
    open_files: int


def read_proc(pid: int, at: float) -> ProcSample:
    """Sample ``pid`` through ``/proc``; raises ``OSError`` when the process is gone."""
    status = parse_proc_status(Path(f"/proc/{pid}/status").read_text())
    cpu = parse_proc_stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    try:
        files = len(os.listdir(f"/proc/{pid}/fd"))
    except PermissionError:
        files = -1
    return ProcSample(
        at=at,
        rss_bytes=status.get("VmRSS", 0),
        peak_rss_bytes=status.get("VmHWM", 0),
        cpu_seconds=cpu,
        threads=status.get("Threads", 0),
        open_files=files,
    )


@dataclass(frozen=True, slots=True)
class HttpProbe:
    """One ``GET /api/status``: when it started (benchmark seconds), how long it took, what it said."""

    at: float
    seconds: float
    ok: bool
    stage: str | None = None
    round: int | None = None
    clients_connected: int | None = None
    error: str | None = None


def latency_summary(probes: Sequence[HttpProbe]) -> dict[str, Any]:
    """Count, failures and latency (ms) of the successful probes: median, p95, max."""
    good = [p.seconds * 1000 for p in probes if p.ok]
    out: dict[str, Any] = {"requests": len(probes), "failures": len(probes) - len(good)}
    if good:
        out.update(median_ms=statistics.median(good), p95_ms=percentile(good, 0.95), max_ms=max(good))
    else:
        out.update(median_ms=None, p95_ms=None, max_ms=None)
    return out


# ------------------------------------------------------------------------------------- children


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM it when the harness dies, however it dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _children() -> ChildProcesses:
    """Every process the benchmark starts; each also gets SIGTERM if the harness dies first."""
    return ChildProcesses(preexec_fn=_die_with_parent)


# ------------------------------------------------------------------------------------ the record


@dataclass(frozen=True, slots=True)
class _WorkersSample:
    """The worker processes together at one moment: resident memory, CPU time, the most threads one has."""

    at: float
    rss_bytes: int
    cpu_seconds: float
    threads_max: int


@dataclass(slots=True)
class _Record:
    """Everything observed during one run (mutable while it runs, turned into the report after)."""

    t0: float
    server_pid: int | None = None
    worker_pids: list[int] = dataclasses.field(default_factory=list)
    events: dict[str, float] = dataclasses.field(default_factory=dict)  # first time of each event kind
    marks: dict[str, ProcSample] = dataclasses.field(default_factory=dict)  # server at each event
    rounds: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] | None = None
    server_samples: list[ProcSample] = dataclasses.field(default_factory=list)
    worker_samples: list[_WorkersSample] = dataclasses.field(default_factory=list)
    probes: list[HttpProbe] = dataclasses.field(default_factory=list)
    metric_probes: list[HttpProbe] = dataclasses.field(default_factory=list)
    workers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    server_exit: int | None = None
    http_url: str | None = None
    training_over: float | None = None
    min_samples: int | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, name: str) -> None:
        """Note the first time of event ``name`` and the server's memory and CPU at that moment."""
        self.events.setdefault(name, self.now())
        if self.server_pid is not None:
            with contextlib.suppress(OSError):
                self.marks[name] = read_proc(self.server_pid, self.now())


async def _sample_forever(rec: _Record, interval: float) -> None:
    """Server (and workers, summed) every ``interval`` seconds until cancelled."""
    while True:
        if rec.server_pid is not None:
            with contextlib.suppress(OSError, ValueError):
                rec.server_samples.append(read_proc(rec.server_pid, rec.now()))
        seen = []
        for pid in rec.worker_pids:
            with contextlib.suppress(OSError, ValueError):
                seen.append(read_proc(pid, 0.0))
        if seen:
            rec.worker_samples.append(
                _WorkersSample(
                    rec.now(),
                    sum(w.rss_bytes for w in seen),
                    sum(w.cpu_seconds for w in seen),
                    max(w.threads for w in seen),
                )
            )
        await asyncio.sleep(interval)


def rounds_completed(metrics_text: str) -> float | None:
    """The value of ``clipfl_rounds_completed_total`` in a Prometheus text exposition, if present."""
    for line in metrics_text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == "clipfl_rounds_completed_total":
            return float(line.rsplit(" ", 1)[-1])
    return None


def status_probe(at: float, seconds: float, http_status: int, text: str) -> HttpProbe:
    """A ``GET /api/status`` answer: good when it is 200 and JSON with ``round`` and ``clients_connected``."""
    body = json.loads(text)
    ok = http_status == 200 and isinstance(body, dict) and "round" in body and "clients_connected" in body
    if not isinstance(body, dict):
        body = {}
    return HttpProbe(
        at,
        seconds,
        ok,
        stage=body.get("stage"),
        round=body.get("round"),
        clients_connected=body.get("clients_connected"),
        error=None if ok else f"HTTP {http_status}: {text[:80]}",
    )


def metrics_probe(at: float, seconds: float, http_status: int, text: str) -> HttpProbe:
    """A ``GET /metrics`` answer: good when it is 200 and has the rounds counter (kept as ``round``)."""
    value = rounds_completed(text)
    ok = http_status == 200 and value is not None
    return HttpProbe(
        at,
        seconds,
        ok,
        round=int(value) if value is not None else None,
        error=None if ok else f"HTTP {http_status}, counter {'found' if value is not None else 'missing'}",
    )


async def _poll(
    rec: _Record,
    url: str,
    interval: float,
    stop: asyncio.Event,
    sink: list[HttpProbe],
    interpret: Callable[[float, float, int, str], HttpProbe],
) -> None:
    """GET ``url`` on a fixed cadence, one request at a time, until ``stop`` is set.

    A slow answer delays the next request rather than piling requests up, so a stalled server shows
    as a few long latencies, not as a flood of requests that the harness itself made slow.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0)) as session:
        next_at = loop.time()
        while not stop.is_set():
            at, started = rec.now(), loop.time()
            try:
                async with session.get(url) as resp:
                    text = await resp.text()
                sink.append(interpret(at, loop.time() - started, resp.status, text))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                sink.append(HttpProbe(at, loop.time() - started, False, error=f"{type(exc).__name__}: {exc}"))
            next_at = max(next_at + interval, loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_at):
                    await stop.wait()


# ----------------------------------------------------------------------------------- the harness


def _run_config_kwargs(opts: ScaleOptions) -> dict[str, Any]:
    """The federation, as ``RunConfig`` keyword arguments shared by the server flags and the workers."""
    return {
        "dataset": "digits",
        "model": "digits_mlp",
        "partition": "iid",
        "clients": opts.clients,
        "rounds": opts.rounds,
        "seed": opts.seed,
        "local_epochs": 1,
        "secagg": opts.secagg,
        "registration_timeout": opts.registration_timeout,
        "round_timeout": opts.round_timeout,
        "unmask_timeout": min(opts.round_timeout, 120.0),
    }


def samples_per_client(opts: ScaleOptions) -> int | None:
    """The ``min_samples`` the clients' iid partition must use, or None when the default holds.

    ``Client`` partitions with ``make_partition``'s default of 10 samples per client, and the embedded
    digits data has 1,438 training samples: 143 clients at most. Beyond that each worker lowers the
    floor to what an even split gives (7 for 200 clients); the report says so.
    """
    from clipfl.config import RunConfig
    from clipfl.data import load_dataset
    from clipfl.data.partition import DEFAULT_MIN_SAMPLES
    from clipfl.errors import ConfigError

    run = RunConfig(**_run_config_kwargs(opts))
    per = len(load_dataset(run.dataset, run.data_dir).train) // run.clients
    if per >= DEFAULT_MIN_SAMPLES:
        return None
    if per < 1:
        raise ConfigError(f"{run.dataset} has too few training samples for {run.clients} clients")
    return per


def command_line(opts: ScaleOptions) -> str:
    """The command that repeats this run (every option spelled out, defaults included)."""
    argv = ["python -m benchmarks.scale"]
    for flag, value in (
        ("--clients", opts.clients),
        ("--rounds", opts.rounds),
        ("--workers", opts.workers),
        ("--secagg", opts.secagg),
        ("--seed", opts.seed),
        ("--out", opts.out),
        ("--json", opts.json_path),
        ("--timeout", opts.timeout),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return " ".join(argv)


def _server_argv(opts: ScaleOptions) -> list[str]:
    argv = [sys.executable, "-m", "clipfl.server", "--bind", "tcp://127.0.0.1:0", "--events"]
    argv += ["--http", "127.0.0.1:0", "--run-dir", str(opts.out / "run")]
    argv += ["--heartbeat-timeout", str(opts.heartbeat_timeout)]
    for key, value in _run_config_kwargs(opts).items():
        argv += ["--" + key.replace("_", "-"), str(value)]
    return argv


def _worker_argv(
    opts: ScaleOptions, index: int, ids: range, address: str, deadline: float, min_samples: int | None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.scale",
        _WORKER,
        "--server",
        address,
        "--first",
        str(ids.start),
        "--count",
        str(len(ids)),
        "--run",
        json.dumps(_run_config_kwargs(opts)),
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


async def _follow_server(
    opts: ScaleOptions,
    rec: _Record,
    children: ChildProcesses,
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
                    tg.create_task(_poll(rec, base + path, interval, stop_polling, sink, interpret))
                )
        elif kind == "listening":
            rec.mark("listening")
            deadline = opts.timeout - rec.now()
            for index, ids in enumerate(split_ids(opts.clients, opts.workers)):
                argv = _worker_argv(opts, index, ids, str(event["address"]), deadline, rec.min_samples)
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


def _last_line(path: Path) -> str:
    """The last non-empty line of a small log (where Python puts the exception that ended a process)."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


class _WorkerFailed(Exception):
    """A worker process died before the run was over (its log says why)."""


async def _watch_worker(rec: _Record, index: int, proc: asyncio.subprocess.Process, log_path: Path) -> None:
    """Fail the run at once when worker ``index`` exits with an error, instead of letting the server
    wait out its registration timeout for clients that will never come."""
    code = await proc.wait()
    if code != 0 and rec.summary is None:
        raise _WorkerFailed(f"worker {index} exited with code {code}: {_last_line(log_path)}")


async def _observe(opts: ScaleOptions, rec: _Record, children: ChildProcesses) -> None:
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


async def run_scale(opts: ScaleOptions) -> dict[str, Any]:
    """Run the benchmark; return the report (also written as JSON and Markdown under ``opts.out``)."""
    opts.out.mkdir(parents=True, exist_ok=True)
    for stale in opts.out.glob("worker-*.json"):
        stale.unlink()
    rec = _Record(t0=time.monotonic(), min_samples=samples_per_client(opts))
    children = _children()
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
        report = _report(opts, rec, status, message, load_start)
        _write(opts, report)
    return report


def _worker_results(opts: ScaleOptions) -> list[dict[str, Any]]:
    out = []
    for index in range(opts.workers):
        path = opts.out / f"worker-{index}.json"
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            out.append({"worker": index, "missing": True})
    return out


# ------------------------------------------------------------------------------------ the report


def _mib(n: float) -> float:
    return round(n / MIB, 1)


def _secagg_parameters(opts: ScaleOptions) -> dict[str, Any]:
    if opts.secagg == "off":
        return {}
    from clipfl import RunConfig

    config = RunConfig(**_run_config_kwargs(opts)).secagg_config()
    assert config is not None
    resolved = config.resolved(opts.clients)
    return {"neighbors": resolved.neighbors, "threshold": resolved.threshold}


def _round_rows(rec: _Record) -> list[dict[str, Any]]:
    rows = []
    before = rec.marks.get("start")
    for event in rec.rounds:
        rnd = int(event["round"])
        mark = rec.marks.get(f"round-{rnd}")
        rows.append(
            {
                "round": rnd,
                "round_seconds": event.get("round_seconds"),
                "participants": len(event.get("participants", [])),
                "failures": len(event.get("failures", {})),
                "failure_reasons": sorted(set(event.get("failures", {}).values()))[:5],
                "test_accuracy": event.get("test_accuracy"),
                "stages": dict(event.get("stage_seconds", {})),
                "server_cpu_seconds": (mark.cpu_seconds - before.cpu_seconds if mark and before else None),
                "server_rss_mib": _mib(mark.rss_bytes) if mark else None,
                "bytes_in": event.get("bytes_in"),
                "bytes_out": event.get("bytes_out"),
            }
        )
        before = mark
    return rows


def _server_figures(rec: _Record) -> dict[str, Any]:
    samples = rec.server_samples + list(rec.marks.values())
    if not samples:
        return {}
    samples.sort(key=lambda s: s.at)
    start, end = rec.marks.get("start"), rec.marks.get(f"round-{len(rec.rounds)}") if rec.rounds else None
    listening = rec.marks.get("listening")
    rates = [
        (b.cpu_seconds - a.cpu_seconds) / (b.at - a.at)
        for a, b in itertools.pairwise(samples)
        if b.at - a.at >= 0.2
    ]
    during = [s for s in samples if start and end and start.at <= s.at <= end.at]
    return {
        "rss_peak_mib": _mib(max(s.peak_rss_bytes for s in samples)),
        "rss_mean_mib": _mib(statistics.fmean(s.rss_bytes for s in samples)),
        "rss_at_listening_mib": _mib(listening.rss_bytes) if listening else None,
        "rss_at_end_mib": _mib(samples[-1].rss_bytes),
        "cpu_seconds_total": round(samples[-1].cpu_seconds, 2),
        "cpu_seconds_registration": (
            round(start.cpu_seconds - listening.cpu_seconds, 2) if start and listening else None
        ),
        "cpu_seconds_training": round(end.cpu_seconds - start.cpu_seconds, 2) if start and end else None,
        "cpu_percent_training": (
            round(100 * (end.cpu_seconds - start.cpu_seconds) / (end.at - start.at), 1)
            if start and end and end.at > start.at
            else None
        ),
        "cpu_percent_max": round(100 * max(rates), 1) if rates else None,
        "rss_mean_training_mib": _mib(statistics.fmean(s.rss_bytes for s in during)) if during else None,
        "threads_max": max(s.threads for s in samples),
        "open_files_max": max(s.open_files for s in samples),
        "samples": len(rec.server_samples),
    }


def _worker_figures(rec: _Record, opts: ScaleOptions) -> dict[str, Any]:
    done: list[int] = []
    errors: dict[str, str] = {}
    for w in rec.workers:
        done += [int(n) for n in w.get("rounds_done", {}).values()]
        errors.update(w.get("errors", {}))
    return {
        "processes": opts.workers,
        "clients_reporting": len(done),
        "clients_with_all_rounds": sum(1 for n in done if n >= opts.rounds),
        "client_errors": len(errors),
        "first_errors": dict(list(errors.items())[:5]),
        "rss_peak_total_mib": _mib(max((w.rss_bytes for w in rec.worker_samples), default=0)),
        "cpu_seconds_total": round(max((w.cpu_seconds for w in rec.worker_samples), default=0.0), 2),
        "build_seconds_max": max((float(w.get("build_seconds", 0.0)) for w in rec.workers), default=None),
        "threads_per_worker_max": max((w.threads_max for w in rec.worker_samples), default=None),
        "missing_results": sum(1 for w in rec.workers if w.get("missing")),
    }


def _live(probes: Sequence[HttpProbe], end: float | None) -> list[HttpProbe]:
    """Probes that count: those that started before the last round ended, less the failures of any
    still in flight then (the server shuts its HTTP API down right after its last round)."""
    if end is None:
        return list(probes)
    return [p for p in probes if p.at <= end and (p.ok or p.at + p.seconds <= end)]


def _http_figures(rec: _Record) -> dict[str, Any]:
    live = _live(rec.probes, rec.training_over)
    metrics = _live(rec.metric_probes, rec.training_over)
    start = rec.events.get("start")
    training = [p for p in live if start is not None and p.at >= start]
    return {
        "endpoint": "GET /api/status",
        **latency_summary(live),
        "during_training": latency_summary(training),
        "at_shutdown_ignored": len(rec.probes) - len(live),
        "first_errors": [p.error for p in live if not p.ok][:5],
        "max_clients_connected_seen": max((p.clients_connected or 0 for p in live), default=0),
        "metrics": {
            "endpoint": "GET /metrics",
            **latency_summary(metrics),
            "rounds_completed_total_max": max((p.round or 0 for p in metrics if p.ok), default=None),
            "first_errors": [p.error for p in metrics if not p.ok][:5],
        },
    }


def _report(
    opts: ScaleOptions, rec: _Record, status: str, message: str, load_start: tuple[float, ...]
) -> dict[str, Any]:
    import torch

    rounds = _round_rows(rec)
    times = [float(r["round_seconds"]) for r in rounds if r["round_seconds"] is not None]
    complete = (
        len(rounds) == opts.rounds
        and all(r["participants"] == opts.clients and r["failures"] == 0 for r in rounds)
        and rec.summary is not None
    )
    if status == "ok" and (rec.server_exit != 0 or rec.summary is None):
        status, message = "failed", f"the server exited with code {rec.server_exit} (see server.log)"
    start, listening = rec.events.get("start"), rec.events.get("listening")
    return {
        "benchmark": "scale",
        "status": status,
        "message": message,
        "command": command_line(opts),
        "config": {
            "clients": opts.clients,
            "rounds": opts.rounds,
            "workers": opts.workers,
            "secagg": opts.secagg,
            **_secagg_parameters(opts),
            "model": "digits_mlp",
            "dataset": "digits",
            "local_epochs": 1,
            "min_samples_per_client": rec.min_samples,
            "seed": opts.seed,
            "heartbeat_timeout": opts.heartbeat_timeout,
            "registration_timeout": opts.registration_timeout,
            "round_timeout": opts.round_timeout,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "pids": {"server": rec.server_pid, "workers": rec.worker_pids},
        "all_rounds_completed": complete,
        "rounds_completed": len(rounds),
        "registration_seconds": round(start - listening, 2) if start and listening else None,
        "total_seconds": round(rec.now(), 2),
        "round_seconds": {
            "mean": statistics.fmean(times) if times else None,
            "median": statistics.median(times) if times else None,
            "max": max(times) if times else None,
        },
        "rounds": rounds,
        "server": _server_figures(rec),
        "http": _http_figures(rec),
        "workers": _worker_figures(rec, opts),
        "summary": rec.summary,
        "server_samples": [asdict(s) for s in rec.server_samples],
    }


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the headline table, then one row per round."""
    c, s, h, w = report["config"], report["server"], report["http"], report["workers"]
    rs = report["round_seconds"]
    lines = [
        f"# Scale benchmark: {c['clients']} clients, {c['secagg']}, {c['rounds']} rounds",
        "",
        f"Status: **{report['status']}**"
        + (f" ({report['message']})" if report["message"] else "")
        + f"; every round with every client: **{'yes' if report['all_rounds_completed'] else 'no'}**.",
        f"Command: `{report['command']}`",
        f"Machine: {report['machine']['cpus']} CPUs, load average {report['machine']['loadavg_start'][0]} "
        f"at the start, {report['machine']['loadavg_end'][0]} at the end (shared).",
        f"Clients: {c['workers']} worker processes, model {c['model']}, {c['local_epochs']} local epoch"
        + (
            f", {'SecAgg+' if c['secagg'] == 'secagg+' else 'SecAgg'} k = {c['neighbors']}, "
            f"t = {c['threshold']}"
            if "neighbors" in c
            else ""
        )
        + (
            f", {c['min_samples_per_client']} samples per client (partition floor lowered)"
            if c.get("min_samples_per_client")
            else ""
        )
        + ".",
        "",
        "| figure | value |",
        "|---|---|",
        f"| registration of all clients (s) | {_fmt(report['registration_seconds'])} |",
        f"| round time mean / median / max (s) | {_fmt(rs['mean'])} / {_fmt(rs['median'])} / "
        f"{_fmt(rs['max'])} |",
        f"| server RSS peak / mean (MiB) | {_fmt(s.get('rss_peak_mib'), 1)} / "
        f"{_fmt(s.get('rss_mean_mib'), 1)} |",
        f"| server CPU: registration / training (s) | {_fmt(s.get('cpu_seconds_registration'))} / "
        f"{_fmt(s.get('cpu_seconds_training'))} |",
        f"| server CPU during training / max 0.5 s window (% of one core) | "
        f"{_fmt(s.get('cpu_percent_training'), 1)} / {_fmt(s.get('cpu_percent_max'), 1)} |",
        f"| server threads / open files (max) | {_fmt(s.get('threads_max'))} / "
        f"{_fmt(s.get('open_files_max'))} |",
        f"| GET /api/status: requests / failures | {h['requests']} / {h['failures']} |",
        f"| GET /api/status latency median / p95 / max (ms) | {_fmt(h['median_ms'], 1)} / "
        f"{_fmt(h['p95_ms'], 1)} / {_fmt(h['max_ms'], 1)} |",
        f"| GET /api/status during training only (ms) | {_fmt(h['during_training']['median_ms'], 1)} / "
        f"{_fmt(h['during_training']['p95_ms'], 1)} / {_fmt(h['during_training']['max_ms'], 1)} |",
        f"| GET /metrics: requests / failures / latency median (ms) | {h['metrics']['requests']} / "
        f"{h['metrics']['failures']} / {_fmt(h['metrics']['median_ms'], 1)} |",
        f"| workers: RSS peak total (MiB) / CPU (s) | {_fmt(w['rss_peak_total_mib'], 1)} / "
        f"{_fmt(w['cpu_seconds_total'])} |",
        f"| worker threads (max in one process of {c['clients'] // c['workers']}+ clients) | "
        f"{_fmt(w['threads_per_worker_max'])} |",
        f"| clients that finished every round / errors | {w['clients_with_all_rounds']} / "
        f"{w['client_errors']} |",
        "",
        "| round | time (s) | clients | dropped | accuracy | server CPU (s) | server RSS (MiB) "
        "| stages (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()) or "-"
        lines.append(
            f"| {r['round']} | {_fmt(r['round_seconds'])} | {r['participants']} | {r['failures']} | "
            f"{_fmt(r['test_accuracy'], 4)} | {_fmt(r['server_cpu_seconds'])} | "
            f"{_fmt(r['server_rss_mib'], 1)} | {stages} |"
        )
    return "\n".join(lines) + "\n"


def _write(opts: ScaleOptions, report: dict[str, Any]) -> None:
    opts.report_json.parent.mkdir(parents=True, exist_ok=True)
    opts.report_json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (opts.out / "scale.md").write_text(render_markdown(report))


# ------------------------------------------------------------------------------------- a worker


async def _run_clients(
    run_kwargs: dict[str, Any],
    ids: range,
    server: str,
    heartbeat_timeout: float,
    connect_timeout: float,
) -> dict[str, Any]:
    """Build the clients ``ids`` and run them all in this event loop until the server ends the run."""
    from clipfl import Client, ClientConfig, ClipflError, RunConfig, federation_data, transport_factory
    from transports.errors import TransportError

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


def _worker_main(argv: list[str]) -> int:
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
            return await _run_clients(
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


# ------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    d = ScaleOptions()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="Many lightweight clients (digits_mlp, one local epoch) in a few worker processes "
        "against one server on loopback: round time, server memory and CPU, HTTP API latency.",
    )
    parser.add_argument("--clients", type=int, default=d.clients, help=f"(default: {d.clients})")
    parser.add_argument("--rounds", type=int, default=d.rounds, help=f"(default: {d.rounds})")
    parser.add_argument(
        "--workers", type=int, default=d.workers, help=f"client processes (default: {d.workers})"
    )
    parser.add_argument("--secagg", choices=("off", "secagg", "secagg+"), default=d.secagg)
    parser.add_argument("--json", type=Path, help="the JSON report (default: OUT/scale.json)")
    parser.add_argument("--out", type=Path, default=d.out, help=f"logs and reports (default: {d.out})")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--registration-timeout", type=float, default=d.registration_timeout)
    parser.add_argument("--round-timeout", type=float, default=d.round_timeout)
    parser.add_argument("--heartbeat-timeout", type=float, default=d.heartbeat_timeout)
    parser.add_argument(
        "--timeout", type=float, default=d.timeout, help=f"the whole run, seconds (default: {d.timeout:g})"
    )
    parser.add_argument("--sample-interval", type=float, default=d.sample_interval)
    parser.add_argument("--http-interval", type=float, default=d.http_interval)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [_WORKER]:
        return _worker_main(argv[1:])
    from clipfl.errors import ClipflError

    args = build_parser().parse_args(argv)
    try:
        opts = ScaleOptions(
            clients=args.clients,
            rounds=args.rounds,
            workers=args.workers,
            secagg=args.secagg,
            out=args.out,
            json_path=args.json,
            seed=args.seed,
            registration_timeout=args.registration_timeout,
            round_timeout=args.round_timeout,
            heartbeat_timeout=args.heartbeat_timeout,
            timeout=args.timeout,
            sample_interval=args.sample_interval,
            http_interval=args.http_interval,
        )
    except ClipflError as exc:
        print(f"benchmarks.scale: error: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_with_sigterm(run_scale(opts)))
    except KeyboardInterrupt:
        print(f"benchmarks.scale: interrupted; every process stopped; partial report in {opts.out}")
        return 130
    print(render_markdown(report))
    print(f"JSON: {opts.report_json}")
    return 0 if report["status"] == "ok" and report["all_rounds_completed"] else 1


async def _with_sigterm(coro: Any) -> dict[str, Any]:
    """SIGTERM cancels the run like Ctrl-C does, so that ``run_scale`` stops every child first."""
    task: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    cancel: Callable[[], object] = task.cancel
    loop.add_signal_handler(signal.SIGTERM, cancel)
    try:
        return await task
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
