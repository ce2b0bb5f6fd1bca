"""HTTP API latency probes: is the server still responsive while it aggregates for many clients?

Responsiveness is probed, not assumed: ``GET /api/status`` on a fixed cadence, one request at a
time, from registration to the last round (latency median, p95, max and failures); ``GET /metrics``
every ``METRICS_INTERVAL`` seconds checks the Prometheus rounds counter under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "METRICS_INTERVAL",
    "HttpProbe",
    "latency_summary",
    "metrics_probe",
    "percentile",
    "poll",
    "rounds_completed",
    "status_probe",
]

METRICS_INTERVAL = 1.0  # seconds between GET /metrics, as a Prometheus server would scrape (but faster)


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


def latency_summary(probes: Sequence[HttpProbe]) -> dict[str, Any]:
    """Count, failures and latency (ms) of the successful probes: median, p95, max."""
    good = [p.seconds * 1000 for p in probes if p.ok]
    out: dict[str, Any] = {"requests": len(probes), "failures": len(probes) - len(good)}
    if good:
        out.update(median_ms=statistics.median(good), p95_ms=percentile(good, 0.95), max_ms=max(good))
    else:
        out.update(median_ms=None, p95_ms=None, max_ms=None)
    return out


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


async def poll(
    now: Callable[[], float],
    url: str,
    interval: float,
    stop: asyncio.Event,
    sink: list[HttpProbe],
    interpret: Callable[[float, float, int, str], HttpProbe],
) -> None:
    """GET ``url`` on a fixed cadence, one request at a time, until ``stop`` is set.

    ``now`` gives benchmark seconds (each probe's ``at``). A slow answer delays the next request
    rather than piling requests up, so a stalled server shows as a few long latencies, not as a flood
    of requests that the harness itself made slow.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0)) as session:
        next_at = loop.time()
        while not stop.is_set():
            at, started = now(), loop.time()
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
