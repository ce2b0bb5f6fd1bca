"""The read-only HTTP API, the event bus and the Prometheus exposition (issue 7, items 1-2).

Everything runs against a fake ``ServerView`` on a real aiohttp server on loopback, spoken to by
aiohttp's client, so routing, headers, JSON strictness and the event stream are all exercised.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipfl.errors import ConfigError
from clipfl.ops import EventBus, parse_http_address, serve_api
from clipfl.ops.prometheus import Metrics

STATIC = Path(__file__).resolve().parents[1] / "clipfl" / "ops" / "static"


class FakeView:
    """A ServerView that a test drives by hand."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {
            "round": 0,
            "stage": "registration",
            "clients_connected": 3,
            "clients_registered": 3,
            "clients_dropped": 0,
            "rounds_total": 5,
            "config": {"dataset": "digits", "clients": 3},
            "started_at": None,
        }
        self.rows: list[dict[str, Any]] = []
        self.totals: dict[str, float] = {
            "rounds_completed": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "dropouts_total": 0,
            "clients_connected": 3,
            "dropped_messages": 0,
        }

    def status(self) -> dict[str, Any]:
        return dict(self.state)

    def rounds(self) -> list[dict[str, Any]]:
        return list(self.rows)

    def counters(self) -> dict[str, float]:
        return dict(self.totals)

    def complete_round(self, bus: EventBus | None, rnd: int, seconds: float, **extra: Any) -> dict[str, Any]:
        row = {
            "round": rnd,
            "round_seconds": seconds,
            "elapsed_seconds": float(rnd) * 2,
            "test_accuracy": 0.5 + rnd / 100,
            "test_loss": 1.0 / rnd,
            "participants": [0, 1, 2],
            "failures": {},
            "selected": [0, 1, 2],
            **extra,
        }
        self.rows.append(row)
        self.state["round"] = rnd
        self.totals["rounds_completed"] = rnd
        if bus is not None:
            bus.publish({"event": "round", **row})
        return row


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeView, EventBus, str]]:
    view, bus = FakeView(), EventBus()
    async with serve_api(view, bus, "127.0.0.1", 0) as port:
        yield view, bus, f"http://127.0.0.1:{port}"


async def _get(url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def _strict_json(body: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(body, parse_constant=refuse)


# --------------------------------------------------------------------------------------- endpoints


async def test_status_and_healthz_return_the_views_state(api: tuple[FakeView, EventBus, str]) -> None:
    view, _, base = api
    status, headers, body = await _get(base + "/api/status")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert _strict_json(body) == view.status()
    assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"
    status, _, body = await _get(base + "/healthz")
    assert (status, _strict_json(body)) == (200, {"status": "ok"})


async def test_rounds_are_listed_and_filtered_by_since(api: tuple[FakeView, EventBus, str]) -> None:
    view, bus, base = api
    rows = [view.complete_round(bus, r, 0.5 * r) for r in (1, 2, 3)]
    status, _, body = await _get(base + "/api/rounds")
    assert status == 200
    assert _strict_json(body) == [{**r, "failures": {}} for r in rows]
    _, _, body = await _get(base + "/api/rounds", params={"since": "2"})
    assert [r["round"] for r in _strict_json(body)] == [3]
    status, _, body = await _get(base + "/api/rounds", params={"since": "two"})
    assert status == 400 and "since must be an integer" in _strict_json(body)["error"]


async def test_non_finite_numbers_become_null_so_browsers_can_parse(
    api: tuple[FakeView, EventBus, str],
) -> None:
    view, _, base = api
    view.complete_round(None, 1, 1.0, test_loss=math.nan, mean_keep_ratio=math.inf)
    _, _, body = await _get(base + "/api/rounds")
    row = _strict_json(body)[0]
    assert row["test_loss"] is None and row["mean_keep_ratio"] is None


async def test_unknown_paths_and_methods_get_json_errors(api: tuple[FakeView, EventBus, str]) -> None:
    _, _, base = api
    status, headers, body = await _get(base + "/api/nope")
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert _strict_json(body) == {"error": "Not Found", "status": 404, "path": "/api/nope"}
    status, _, body = await _get(base + "/static/../../errors.py")
    assert status in (403, 404) and "error" in _strict_json(body)
    async with aiohttp.ClientSession() as http, http.post(base + "/api/status", data=b"{}") as resp:
        assert resp.status == 405 and "GET" in resp.headers["Allow"]
        assert (await resp.json())["status"] == 405


async def test_a_failing_view_gives_a_json_500_and_the_api_keeps_serving(
    api: tuple[FakeView, EventBus, str], caplog: pytest.LogCaptureFixture
) -> None:
    view, _, base = api

    def broken() -> dict[str, Any]:
        raise RuntimeError("view bug")

    view.status = broken  # type: ignore[method-assign]
    status, _, body = await _get(base + "/api/status")
    assert status == 500 and _strict_json(body)["error"] == "internal error"
    assert "view bug" in caplog.text
    assert (await _get(base + "/healthz"))[0] == 200


async def test_dashboard_page_is_self_contained(api: tuple[FakeView, EventBus, str]) -> None:
    """No CDN: the page and everything it loads come from this server (checked by CSP and by content)."""
    _, _, base = api
    status, headers, body = await _get(base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    html = body.decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"/static/dashboard.js", "/static/dashboard.css"} <= set(refs)
    assert all(r.startswith("/") for r in refs), refs
    for name in ("dashboard.js", "dashboard.css"):
        status, _, text = await _get(f"{base}/static/{name}")
        assert status == 200
        urls = set(re.findall(rb"https?://[^\s\"')]+", text))
        assert urls <= {b"http://www.w3.org/2000/svg"}, urls  # an XML namespace name, never fetched


# ------------------------------------------------------------------------------------ event stream


async def _sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    name = "message"
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            yield name, _strict_json(line[len("data: ") :].encode())
            name = "message"


async def test_event_stream_sends_a_snapshot_then_live_events(api: tuple[FakeView, EventBus, str]) -> None:
    view, bus, base = api
    first = view.complete_round(bus, 1, 1.5)
    bus.publish({"event": "stage", "round": 1, "stage": "share_keys", "seconds": 0.25})
    async with asyncio.timeout(10), aiohttp.ClientSession() as http, http.get(base + "/api/events") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = _sse_events(resp)
        name, snap = await anext(events)
        assert name == "snapshot"
        assert snap["rounds"] == [first] and snap["status"] == view.status()
        assert snap["stages"] == [{"event": "stage", "round": 1, "stage": "share_keys", "seconds": 0.25}]
        second = view.complete_round(bus, 2, 0.75, stragglers=[1], mean_keep_ratio=0.8)
        assert await anext(events) == ("round", {"event": "round", **second})
        bus.publish({"event": "status", "stage": "masked_input"})
        assert await anext(events) == ("status", {"event": "status", "stage": "masked_input"})
        bus.publish({"event": "Not A Name\nevent: x"})
        name, data = await anext(events)
        assert name == "message" and data == {"event": "Not A Name\nevent: x"}


async def test_stopping_the_api_ends_open_event_streams() -> None:
    view, bus = FakeView(), EventBus()
    async with asyncio.timeout(10):  # a hang here would be the bug
        async with aiohttp.ClientSession() as http, serve_api(view, bus) as port:
            resp = await http.get(f"http://127.0.0.1:{port}/api/events")
            name, _ = await anext(_sse_events(resp))
            assert name == "snapshot" and bus.statistics().subscribers == 1
        assert bus.statistics().subscribers == 0
        resp.close()


async def test_a_watcher_that_fell_behind_gets_a_fresh_snapshot() -> None:
    """The bus drops the oldest events for a slow watcher; the stream then resends the whole state."""
    view, bus = FakeView(), EventBus(queue_size=2)
    async with (
        asyncio.timeout(10),
        serve_api(view, bus) as port,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/api/events") as resp,
    ):
        events = _sse_events(resp)
        assert (await anext(events))[0] == "snapshot"
        for rnd in range(1, 6):  # published in one go: the handler cannot run in between
            view.complete_round(bus, rnd, 1.0)
        name, snap = await anext(events)
        assert name == "snapshot" and [r["round"] for r in snap["rounds"]] == [1, 2, 3, 4, 5]
        assert bus.statistics().dropped == 3


# ----------------------------------------------------------------------------------------- the bus


def test_publish_never_waits_and_drops_the_oldest_for_a_full_queue() -> None:
    bus = EventBus(queue_size=3)
    sub = bus.subscribe()
    for i in range(10):
        bus.publish({"event": "round", "round": i})
    assert [e["round"] for e in sub._items] == [7, 8, 9]
    assert sub.dropped == 7 and bus.statistics().dropped == 7 and bus.statistics().published == 10


@given(st.lists(st.one_of(st.integers(0, 9), st.just(None)), max_size=60), st.integers(1, 5))
def test_a_subscriber_sees_exactly_the_newest_events_that_fit(steps: list[int | None], size: int) -> None:
    """Interleave publishes (ints) and takes (None): a take yields the oldest event still queued,
    where the queue holds the newest ``size`` events not yet taken."""
    bus = EventBus(queue_size=size)
    sub = bus.subscribe()
    model: list[int] = []
    dropped = 0
    for step in steps:
        if step is None:
            if model:
                assert sub._items.popleft()["v"] == model.pop(0)
        else:
            bus.publish({"event": "x", "v": step})
            model.append(step)
            if len(model) > size:
                model.pop(0)
                dropped += 1
    assert [e["v"] for e in sub._items] == model and sub.dropped == dropped


async def test_get_drains_then_ends_when_the_bus_closes() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish({"event": "a"})
    waiter = asyncio.ensure_future(sub.get())
    assert (await waiter)["event"] == "a"
    bus.publish({"event": "b"})
    bus.close()
    assert [e["event"] async for e in sub] == ["b"]
    assert bus.subscribe().closed


def test_a_failing_listener_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[str] = []

    def bad(event: dict[str, Any]) -> None:
        raise ValueError("listener bug")

    bus.add_listener(bad)
    remove = bus.add_listener(lambda e: seen.append(e["event"]))
    bus.publish({"event": "round"})
    remove()
    bus.publish({"event": "round"})
    assert seen == ["round"] and bus.statistics().listener_errors == 2
    assert "listener bug" in caplog.text


def test_events_are_copied_so_the_publisher_may_reuse_its_dict() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    event: dict[str, Any] = {"event": "status", "stage": "fit"}
    bus.publish(event)
    event["stage"] = "changed"
    assert sub._items[0]["stage"] == "fit" and bus.recent("status")[0]["stage"] == "fit"
    with pytest.raises(TypeError):
        bus.publish({"round": 1})


# -------------------------------------------------------------------------------------- Prometheus

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A strict reader of the text format: every sample belongs to a family declared by # TYPE."""
    assert text.endswith("\n")
    families: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in families
            families[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = _SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in families else name
        assert family in families, f"{name} has no # TYPE"
        pairs = frozenset(_LABEL.findall(labels or ""))
        key = (name, pairs)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value.replace("+Inf", "inf"))
    return samples


async def test_metrics_expose_counters_and_histograms(api: tuple[FakeView, EventBus, str]) -> None:
    view, bus, base = api
    for rnd, seconds in [(1, 0.3), (2, 1.0), (3, 7.0)]:
        view.complete_round(bus, rnd, seconds)
    for stage, seconds in [("share_keys", 0.02), ("share_keys", 0.2), ('odd"name', 3.0)]:
        bus.publish({"event": "stage", "round": 3, "stage": stage, "seconds": seconds})
    view.totals.update(bytes_in=1234, bytes_out=5678, dropouts_total=2, dropped_messages=1)
    status, headers, body = await _get(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert any(line.startswith("clipfl_rounds_completed_total ") for line in text.splitlines())
    m = parse_exposition(text)
    none: frozenset[tuple[str, str]] = frozenset()
    assert m[("clipfl_rounds_completed_total", none)] == 3
    assert m[("clipfl_bytes_in_total", none)] == 1234 and m[("clipfl_bytes_out_total", none)] == 5678
    assert m[("clipfl_dropouts_total", none)] == 2 and m[("clipfl_dropped_messages_total", none)] == 1
    assert m[("clipfl_clients_connected", none)] == 3 and m[("clipfl_current_round", none)] == 3
    bucket = "clipfl_round_duration_seconds_bucket"
    assert m[(bucket, frozenset({("le", "0.25")}))] == 0
    assert m[(bucket, frozenset({("le", "0.5")}))] == 1
    assert m[(bucket, frozenset({("le", "1.0")}))] == 2  # le is inclusive
    assert m[(bucket, frozenset({("le", "10.0")}))] == 3 and m[(bucket, frozenset({("le", "+Inf")}))] == 3
    assert m[("clipfl_round_duration_seconds_sum", none)] == pytest.approx(8.3)
    assert m[("clipfl_round_duration_seconds_count", none)] == 3
    share = frozenset({("stage", "share_keys")})
    assert m[("clipfl_secagg_stage_seconds_count", share)] == 2
    assert m[("clipfl_secagg_stage_seconds_bucket", share | {("le", "0.05")})] == 1
    assert m[("clipfl_secagg_stage_seconds_count", frozenset({("stage", 'odd\\"name')}))] == 1


def test_metrics_started_late_are_seeded_from_the_rounds_and_stages_so_far() -> None:
    view, bus = FakeView(), EventBus()
    view.complete_round(bus, 1, 2.0)
    bus.publish({"event": "stage", "round": 1, "stage": "unmasking", "seconds": 0.5})
    metrics = Metrics(view, bus)
    view.complete_round(bus, 2, 3.0)
    m = parse_exposition(metrics.render())
    assert m[("clipfl_round_duration_seconds_count", frozenset())] == 2
    assert m[("clipfl_round_duration_seconds_sum", frozenset())] == 5.0
    assert m[("clipfl_secagg_stage_seconds_count", frozenset({("stage", "unmasking")}))] == 1
    metrics.close()
    view.complete_round(bus, 3, 3.0)
    assert parse_exposition(metrics.render())[("clipfl_round_duration_seconds_count", frozenset())] == 2


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_histogram_buckets_count_values_at_or_below_each_bound(values: list[float]) -> None:
    bounds = (0.5, 1.0, 10.0)
    view, bus = FakeView(), EventBus()
    metrics = Metrics(view, bus, round_buckets=bounds)
    for rnd, v in enumerate(values, start=1):
        view.complete_round(bus, rnd, v)
    for bad in (math.nan, math.inf, True, "3"):  # not finite numbers: not observed
        bus.publish({"event": "round", "round": 0, "round_seconds": bad})
    m = parse_exposition(metrics.render())
    name = "clipfl_round_duration_seconds"
    counts = [m[(f"{name}_bucket", frozenset({("le", le)}))] for le in ("0.5", "1.0", "10.0", "+Inf")]
    assert counts == [*(sum(v <= b for v in values) for b in bounds), len(values)]
    assert m[(f"{name}_count", frozenset())] == len(values)
    assert m[(f"{name}_sum", frozenset())] == pytest.approx(math.fsum(values))
    metrics.close()


async def test_two_servers_in_one_process_keep_their_own_metrics() -> None:
    """Each app has its own registry: no duplicate-name clash, no sharing, the global registry untouched."""
    from prometheus_client import REGISTRY

    before = {m.name for m in REGISTRY.collect()}
    (view_a, bus_a), (view_b, bus_b) = (FakeView(), EventBus()), (FakeView(), EventBus())
    view_a.complete_round(bus_a, 1, 0.3)
    view_b.totals["bytes_in"] = 99
    async with serve_api(view_a, bus_a) as port_a, serve_api(view_b, bus_b) as port_b:
        a = parse_exposition((await _get(f"http://127.0.0.1:{port_a}/metrics"))[2].decode())
        b = parse_exposition((await _get(f"http://127.0.0.1:{port_b}/metrics"))[2].decode())
    none: frozenset[tuple[str, str]] = frozenset()
    assert a[("clipfl_round_duration_seconds_count", none)] == 1 and a[("clipfl_bytes_in_total", none)] == 0
    assert b[("clipfl_round_duration_seconds_count", none)] == 0 and b[("clipfl_bytes_in_total", none)] == 99
    assert {m.name for m in REGISTRY.collect()} == before


def test_the_exposition_has_exactly_the_documented_families() -> None:
    """Names and types as before the move to prometheus_client; no ``_created`` series added."""
    view, bus = FakeView(), EventBus()
    view.complete_round(bus, 1, 0.3)
    bus.publish({"event": "stage", "round": 1, "stage": "unmasking", "seconds": 0.5})
    text = Metrics(view, bus).render()
    types = dict(line.split(" ")[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert types == {
        "clipfl_rounds_completed_total": "counter",
        "clipfl_round_duration_seconds": "histogram",
        "clipfl_bytes_in_total": "counter",
        "clipfl_bytes_out_total": "counter",
        "clipfl_dropouts_total": "counter",
        "clipfl_dropped_messages_total": "counter",
        "clipfl_clients_connected": "gauge",
        "clipfl_current_round": "gauge",
        "clipfl_secagg_stage_seconds": "histogram",
        "clipfl_events_dropped_total": "counter",
        "clipfl_event_subscribers": "gauge",
    }
    assert "_created" not in text


# ------------------------------------------------------------------------------------------ --http


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)), (":9000", ("127.0.0.1", 9000))],
)
def test_parse_http_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_http_address(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:99999", "::1:80", "h:-1"])
def test_parse_http_address_refuses_bad_input(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_http_address(text)


async def test_a_port_in_use_is_a_config_error(api: tuple[FakeView, EventBus, str]) -> None:
    _, _, base = api
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match="cannot serve the HTTP API"):
        async with serve_api(FakeView(), EventBus(), "127.0.0.1", port):
            pass
