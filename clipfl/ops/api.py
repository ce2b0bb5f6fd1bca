"""The server's read-only HTTP API and dashboard, served by aiohttp on the server's event loop.

    GET /               the live dashboard (static HTML, JS and CSS from ``static/``, no CDN)
    GET /api/status     the federation now (``ServerView.status``)
    GET /api/rounds     the metrics rows so far; ``?since=R`` keeps rounds after R
    GET /api/events     server-sent events: a ``snapshot`` first, then ``round``, ``stage``, ``status``...
    GET /metrics        Prometheus text format (or OpenMetrics, as the scraper asks), by prometheus_client
    GET /healthz        liveness probe

Why it cannot slow the round loop: every handler reads in-memory snapshots through ``ServerView``
(cheap, synchronous) and writes to its own socket; an event stream reads its own bounded
subscription, so a stalled browser blocks only its own handler while the bus drops its oldest events
(and the stream then sends a fresh snapshot). Nothing here changes the server: GET and HEAD only;
any other path or method gets a JSON error. Listens on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.aiohttp import make_aiohttp_handler

from clipfl.droplog import OneLineErrors
from clipfl.errors import ConfigError
from clipfl.ops.events import Event, EventBus, Subscription
from clipfl.ops.prometheus import Metrics
from clipfl.ops.view import ServerView

__all__ = ["KEEPALIVE_SECONDS", "jsonable", "make_app", "parse_http_address", "serve_api", "start_api"]

log = logging.getLogger("clipfl.ops.api")
# aiohttp logs each malformed request (a client's fault) with a traceback quoting its bytes: one line.
http_log = logging.getLogger("clipfl.ops.http")
http_log.addFilter(OneLineErrors(HttpProcessingError))

# Proxies and browsers close idle streams after a minute or so; a comment line every 15 s keeps the
# event stream open and lets the handler notice a vanished browser.
KEEPALIVE_SECONDS = 15.0
# How soon a browser retries a dropped event stream (the SSE ``retry`` field), in milliseconds.
RETRY_MS = 2000

_STATIC = Path(str(resources.files("clipfl.ops") / "static"))
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_VIEW = web.AppKey("view", ServerView)
_BUS = web.AppKey("bus", EventBus)
_METRICS = web.AppKey("metrics", Metrics)
_STREAMS: web.AppKey[set[Subscription]] = web.AppKey("streams")


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars, 0-d arrays
    if callable(item):
        return jsonable(item())
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(jsonable(value), allow_nan=False, separators=(",", ":"))


def _json(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=_dumps(data), status=status, content_type="application/json", headers=headers or {}
    )


# ------------------------------------------------------------------------------------------ handlers


async def _status(request: web.Request) -> web.Response:
    return _json(request.app[_VIEW].status())


async def _rounds(request: web.Request) -> web.Response:
    rows = request.app[_VIEW].rounds()
    since = request.query.get("since")
    if since is not None:
        try:
            after = int(since)
        except ValueError:
            raise web.HTTPBadRequest(reason=f"since must be an integer round number, got {since!r}") from None
        rows = [r for r in rows if isinstance(r.get("round"), int) and r["round"] > after]
    return _json(rows)


async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_STATIC / "index.html", headers={"Content-Security-Policy": _CSP})


def _snapshot(app: web.Application) -> Event:
    return {
        "event": "snapshot",
        "status": app[_VIEW].status(),
        "rounds": app[_VIEW].rounds(),
        "stages": app[_BUS].recent("stage"),
    }


def _sse(event: Mapping[str, Any]) -> bytes:
    kind = event.get("event")
    name = kind if isinstance(kind, str) and _EVENT_NAME.match(kind) else "message"
    return f"event: {name}\ndata: {_dumps(event)}\n\n".encode()  # JSON has no raw newline: one data line


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: subscribe first, then send the snapshot, so no event falls in between."""
    app = request.app
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    with app[_BUS].subscribe() as sub:
        app[_STREAMS].add(sub)
        try:
            await response.prepare(request)
            await response.write(f"retry: {RETRY_MS}\n\n".encode() + _sse(_snapshot(app)))
            seen_drops = 0
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        event = await sub.get()
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                except EOFError:
                    break
                if sub.dropped != seen_drops:
                    # This watcher fell behind and lost events: resend the whole state instead.
                    seen_drops = sub.dropped
                    log.info("event stream to %s fell behind (%d events dropped)", request.remote, seen_drops)
                    await response.write(_sse(_snapshot(app)))
                    continue
                await response.write(_sse(event))
        except (ConnectionResetError, ConnectionError):
            pass  # the browser went away
        finally:
            app[_STREAMS].discard(sub)
    return response


# ---------------------------------------------------------------------------------------- the app


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _json(
            {"error": exc.reason, "status": exc.status, "path": request.path},
            status=exc.status,
            headers=headers,
        )
    except Exception:
        log.exception("HTTP API handler failed on %s %s", request.method, request.path)
        return _json({"error": "internal error", "status": 500, "path": request.path}, status=500)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


async def _end_streams(app: web.Application) -> None:
    streams = app[_STREAMS]
    for sub in tuple(streams):
        sub.close()


async def _stop_metrics(app: web.Application) -> None:
    app[_METRICS].close()


def make_app(view: ServerView, bus: EventBus) -> web.Application:
    """The aiohttp application (GET and HEAD routes only); ``start_api`` serves it."""
    app = web.Application(middlewares=[_json_errors])
    app[_VIEW] = view
    app[_BUS] = bus
    metrics = app[_METRICS] = Metrics(view, bus)
    streams: set[Subscription] = set()
    app[_STREAMS] = streams
    app.router.add_get("/", _index)
    app.router.add_get("/api/status", _status)
    app.router.add_get("/api/rounds", _rounds)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_get("/healthz", _healthz)
    app.router.add_static("/static/", _STATIC, follow_symlinks=False, show_index=False)
    app.on_response_prepare.append(_headers)
    app.on_shutdown.append(_end_streams)
    app.on_cleanup.append(_stop_metrics)
    return app


def parse_http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6; an empty host means loopback) for ``--http``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--http wants HOST:PORT (for example 127.0.0.1:8080), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"write an IPv6 address in brackets, as [::1]:8080; got {text!r}")
    return host or "127.0.0.1", int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


async def start_api(
    view: ServerView, bus: EventBus, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve the API on ``host:port`` (0: a free port); return the runner and the bound port.

    Stop it with ``await runner.cleanup()``: open event streams end at once.
    """
    runner = web.AppRunner(make_app(view, bus), access_log=None, shutdown_timeout=5.0, logger=http_log)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot serve the HTTP API on {host}:{port}: {exc.strerror or exc}") from exc
    bound = int(runner.addresses[0][1])
    if not _is_loopback(host):
        log.warning(
            "HTTP API on %s:%d is reachable from other machines; it is read-only and unauthenticated",
            host,
            bound,
        )
    log.info("HTTP API and dashboard on http://%s:%d/", f"[{host}]" if ":" in host else host, bound)
    return runner, bound


@contextlib.asynccontextmanager
async def serve_api(
    view: ServerView, bus: EventBus, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[int]:
    """``async with serve_api(view, bus, host, port) as bound_port:`` serves for the block's duration."""
    runner, bound = await start_api(view, bus, host, port)
    try:
        yield bound
    finally:
        await runner.cleanup()
