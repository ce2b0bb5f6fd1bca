"""Log lines that do not amplify (issue 14, failure 6): summaries of rejected messages, rate-limited
per peer and overall, every drop still accounted for; malformed HTTP requests in one line."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipfl.droplog import Drop, DropLog, OneLineErrors, one_line, summarize
from clipfl.ops.api import serve_api
from clipfl.ops.events import EventBus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drop(peer: bytes = b"\x01peer-a", nbytes: int = 43, reason: str = "bad dtype") -> Drop:
    return Drop(peer=peer, reason=reason, frames=2, nbytes=nbytes, message_type="fit_res")


def test_a_summary_names_type_sizes_and_peer_and_never_the_contents() -> None:
    reason = "dtype 'x\ny" + "z" * 100_000  # a peer-controlled string with a line break
    line = summarize(Drop(peer=bytes(range(1, 17)), reason=reason, frames=3, nbytes=25_000_000))
    assert line.startswith("dropped message from peer 010203040506 (3 frames, 25000000 bytes): dtype 'x y")
    assert "\n" not in line and len(line) < 300 and line.endswith("...")
    assert summarize(_drop()) == "dropped fit_res from peer 01706565722d (2 frames, 43 bytes): bad dtype"


def test_one_line_removes_line_breaks_and_control_characters() -> None:
    assert one_line("a\r\n  b\tc\x00d\x1b[31m") == "a b c?d?[31m"
    assert one_line("x" * 500, 10) == "x" * 10 + "..."


def test_a_peer_gets_a_burst_then_one_line_per_interval_that_counts_what_was_held_back() -> None:
    clock = Clock()
    log = DropLog(burst=5, interval=60.0, clock=clock)
    assert [len(log.record(_drop())) for _ in range(5)] == [1] * 5
    assert all(log.record(_drop(nbytes=1000)) == [] for _ in range(100))
    clock.now += 59.0
    assert log.record(_drop()) == []
    clock.now += 2.0
    (line,) = log.record(_drop())
    assert line.endswith("; 101 earlier drops (100043 bytes) from this peer in the last 61 s were not logged")
    other = log.record(_drop(peer=b"\x02other"))  # another peer is not silenced by the first
    assert other == ["dropped fit_res from peer 026f74686572 (2 frames, 43 bytes): bad dtype"]
    stats = log.statistics()
    assert (stats.dropped, stats.logged, stats.held_back, stats.peers_tracked) == (108, 7, 0, 2)


def test_many_peers_share_one_global_budget_and_flush_reports_the_rest() -> None:
    clock = Clock()
    log = DropLog(burst=5, interval=60.0, global_burst=20, clock=clock)
    lines = [line for i in range(500) for line in log.record(_drop(peer=i.to_bytes(4, "big")))]
    assert len(lines) == 20
    assert log.statistics().held_back == 480
    (summary,) = log.flush()
    assert summary == "480 more dropped messages (20640 bytes) from 480 peers were not logged"
    assert log.flush() == [] and log.statistics().held_back == 0


def test_peers_beyond_the_tracked_number_are_summarized_once_per_interval() -> None:
    clock = Clock()
    log = DropLog(burst=1, interval=10.0, global_burst=1, max_peers=4, clock=clock)
    lines = [line for i in range(50) for line in log.record(_drop(peer=bytes([1, i])))]
    assert len(lines) == 1 and log.statistics().peers_tracked == 4
    clock.now += 10.0
    lines = log.record(_drop(peer=b"\x01new"))
    assert lines[0] == "45 more dropped messages (1935 bytes) from 45 peers were not logged"


_NUMBERS = re.compile(r"; (\d+) earlier drops|^(\d+) more dropped messages")


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(st.integers(0, 30), st.floats(0, 30)), min_size=1, max_size=400),
    burst=st.integers(1, 6),
    global_burst=st.integers(1, 30),
    max_peers=st.integers(1, 8),
)
def test_lines_are_bounded_by_the_budget_and_every_drop_is_accounted_for(
    events: list[tuple[int, float]], burst: int, global_burst: int, max_peers: int
) -> None:
    clock = Clock()
    interval = 60.0
    log = DropLog(burst=burst, interval=interval, global_burst=global_burst, max_peers=max_peers, clock=clock)
    start = clock.now
    lines: list[str] = []
    for peer, dt in events:
        clock.now += dt
        out = log.record(_drop(peer=bytes([1, peer])))
        assert len(out) <= 2
        lines += out
    periods = (clock.now - start) / interval
    drop_lines = [line for line in lines if line.startswith("dropped ")]
    assert len(drop_lines) <= global_burst + periods * global_burst + 1e-9
    assert len(lines) - len(drop_lines) <= 1 + periods
    lines += log.flush()
    said = len(drop_lines)
    for line in lines:
        for earlier, more in _NUMBERS.findall(line):
            said += int(earlier or more)
    assert said == len(events) == log.statistics().dropped
    assert all(len(line) < 500 and "\n" not in line for line in lines)


def test_one_line_errors_keeps_the_traceback_of_unexpected_exceptions() -> None:
    flt = OneLineErrors(ValueError)
    for exc, condensed in ((ValueError("bad\nrequest"), True), (RuntimeError("bug"), False)):
        try:
            raise exc
        except Exception:
            record = logging.LogRecord(
                "t", logging.ERROR, __file__, 1, "Error from %s", ("x",), sys.exc_info()
            )
        assert flt.filter(record)
        if condensed:
            assert record.exc_info is None and record.levelno == logging.WARNING
            assert record.getMessage() == "Error from x: ValueError: bad request"
        else:
            assert record.exc_info is not None and record.levelno == logging.ERROR


class _View:
    """The API's view; malformed requests never reach a handler, so nothing here is read."""

    def status(self) -> dict[str, Any]:
        return {}

    def rounds(self) -> list[dict[str, Any]]:
        return []

    def counters(self) -> dict[str, float]:
        return {}


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",  # TLS on the HTTP port
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\n\x01\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
        b"\x00" * 100 + b"\r\n\r\n",
    ],
)
async def test_a_malformed_http_request_is_logged_in_one_line(
    request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="clipfl.ops.http")
    async with serve_api(_View(), EventBus(), "127.0.0.1", 0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        await writer.drain()
        assert (await reader.read(100)).startswith(b"HTTP/1.0 400 Bad Request")
        writer.close()
    records = [r for r in caplog.records if r.name == "clipfl.ops.http"]
    assert records, "the malformed request was not logged at all"
    for record in records:
        assert record.exc_info is None and record.exc_text is None
        assert "\n" not in record.getMessage() and len(record.getMessage()) < 400
        assert record.levelno <= logging.WARNING
