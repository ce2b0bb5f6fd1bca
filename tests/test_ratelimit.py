"""The app-level token bucket: tbf semantics, computed with a fake clock (no sleep is ever timed).

Rates of the form ``8 * 2**k`` bit/s and clock readings in multiples of ``2**-10`` s keep every
quantity a dyadic rational, so the bucket's float arithmetic is exact and the tests use ``==``.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transports.errors import TransportConfigError
from transports.ratelimit import ETHERNET_FRAME_BYTES, TokenBucket, default_burst_bytes, tcp_wire_bytes


class FakeClock:
    """A clock the test moves by hand; ``sleep`` advances it instead of waiting."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def bucket(rate_bps: int | None, burst: int | None, clock: FakeClock) -> TokenBucket:
    return TokenBucket(rate_bps, burst, clock=clock, sleep=clock.sleep)


def reference_tbf(rate_bps: int, burst: int, arrivals: list[tuple[float, int]]) -> list[float]:
    """A textbook tbf, written independently of the GCRA: tokens refilled and capped, FIFO queue.

    Returns each message's departure time; messages are at most ``burst`` bytes (tbf drops larger).
    """
    rate = rate_bps / 8
    tokens, last, previous_departure = float(burst), 0.0, -math.inf
    departures = []
    for arrival, size in arrivals:
        start = max(arrival, previous_departure)
        tokens = min(burst, tokens + (start - last) * rate)
        wait = max(0.0, (size - tokens) / rate)
        departure = start + wait
        tokens = min(burst, tokens + wait * rate) - size
        last = previous_departure = departure
        departures.append(departure)
    return departures


dyadic_rates = st.integers(min_value=3, max_value=24).map(lambda k: 8 * 2**k)
dyadic_times = st.integers(min_value=0, max_value=2**16).map(lambda t: t / 1024)


def test_default_burst_is_four_frames_at_low_rates_and_a_250hz_tick_at_high_rates() -> None:
    assert default_burst_bytes(2_000_000) == 4 * ETHERNET_FRAME_BYTES
    assert default_burst_bytes(10_000_000_000) == 10_000_000_000 // 8 // 250
    with pytest.raises(TransportConfigError):
        default_burst_bytes(0)


def test_tcp_wire_bytes_counts_one_ethernet_frame_per_segment() -> None:
    assert [tcp_wire_bytes(n) for n in (0, 1, 1448, 1449, 1448 * 1000)] == [
        0,
        67,
        1514,
        1449 + 132,
        1514 * 1000,
    ]
    with pytest.raises(TransportConfigError):
        tcp_wire_bytes(-1)


def test_a_full_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    b = bucket(8 * 1024, 4096, clock)  # 1024 bytes/s, 4 s of burst
    assert b.reserve(4096) == 0.0
    assert b.reserve(1024) == 1.0
    assert b.reserve(512) == 1.5
    clock.now = 10.0  # long idle: the bucket is full again, not fuller
    assert b.tokens() == 4096
    assert b.reserve(4096) == 0.0
    assert b.reserve(1) == 1 / 1024


def test_a_message_larger_than_the_burst_goes_into_debt_and_leaves_with_its_last_byte() -> None:
    clock = FakeClock()
    b = bucket(8 * 1024, 1024, clock)
    # tbf would send 1024 bytes at once and the remaining 3072 over 3 s: the message is out at t=3.
    assert b.reserve(4096) == 3.0
    assert b.tokens() == 1024 - 4096
    clock.now = 3.0
    assert b.tokens() == 0.0
    assert b.reserve(512) == 0.5  # the next message waits for the debt, then for its own tokens


def test_unlimited_never_waits_but_still_counts() -> None:
    clock = FakeClock()
    b = bucket(None, None, clock)
    assert [b.reserve(n) for n in (0, 10**9, 5)] == [0.0, 0.0, 0.0]
    stats = b.statistics()
    assert (stats.rate_bps, stats.messages, stats.bytes_consumed, stats.total_delay_seconds) == (
        None,
        3,
        10**9 + 5,
        0.0,
    )
    assert math.isinf(stats.tokens)


@pytest.mark.parametrize(
    ("rate", "burst", "size"),
    [(0, None, 1), (-8, None, 1), (8000, 0, 1), (8000, -1, 1), (8000, None, -1), (1.5, None, 1)],
)
def test_invalid_settings_and_sizes_are_config_errors(rate: object, burst: int | None, size: int) -> None:
    with pytest.raises(TransportConfigError):
        TokenBucket(rate, burst, clock=FakeClock()).reserve(size)  # type: ignore[arg-type]


@given(
    rate=dyadic_rates,
    burst=st.integers(min_value=1, max_value=2**20),
    sizes=st.lists(st.integers(min_value=0, max_value=2**22), min_size=1, max_size=30),
)
def test_back_to_back_messages_wait_for_exactly_the_bytes_beyond_the_burst(
    rate: int, burst: int, sizes: list[int]
) -> None:
    """Sent at one instant from a full bucket, message k leaves when sum(n_1..n_k) - burst bytes have
    drained at the rate: the definition of a token bucket, exact in dyadic arithmetic."""
    b = bucket(rate, burst, FakeClock(5.0))
    total = 0
    for size in sizes:
        total += size
        assert b.reserve(size) == max(0, total - burst) * 8 / rate


@given(
    rate=dyadic_rates,
    burst=st.integers(min_value=1, max_value=2**16),
    arrivals=st.lists(st.tuples(dyadic_times, st.integers(min_value=0, max_value=2**16)), max_size=30),
)
def test_departures_match_a_textbook_tbf(rate: int, burst: int, arrivals: list[tuple[float, int]]) -> None:
    arrivals = sorted((t, min(size, burst)) for t, size in arrivals)
    clock = FakeClock()
    b = bucket(rate, burst, clock)
    departures = []
    for t, size in arrivals:
        clock.now = t
        departures.append(t + b.reserve(size))
    assert departures == pytest.approx(reference_tbf(rate, burst, arrivals), rel=1e-12, abs=1e-9)


@given(
    rate=dyadic_rates,
    burst=st.integers(min_value=1, max_value=2**16),
    arrivals=st.lists(st.tuples(dyadic_times, st.integers(min_value=0, max_value=2**18)), max_size=30),
)
def test_output_conforms_to_the_rate_and_burst_and_keeps_fifo_order(
    rate: int, burst: int, arrivals: list[tuple[float, int]]
) -> None:
    """Between two departures i < j, the messages after i carry at most burst + rate * (t_j - t_i)
    bytes (sizes beyond the burst included), and no message overtakes an earlier one."""
    arrivals = sorted(arrivals)
    clock = FakeClock()
    b = bucket(rate, burst, clock)
    departures = []
    for t, size in arrivals:
        clock.now = t
        departures.append(t + b.reserve(size))
    assert departures == sorted(departures)
    for i in range(len(arrivals)):
        carried = 0
        for j in range(i + 1, len(arrivals)):
            carried += arrivals[j][1]
            assert carried <= burst + (departures[j] - departures[i]) * rate / 8


async def test_wait_consume_sleeps_the_computed_delay_in_fifo_order() -> None:
    clock = FakeClock()
    b = bucket(8 * 1024, 1024, clock)
    delays = [await b.wait_consume(n) for n in (1024, 2048, 512)]
    assert delays == [0.0, 2.0, 0.5]
    assert clock.slept == [2.0, 0.5]
    assert clock.now == 2.5
    stats = b.statistics()
    assert (stats.messages, stats.bytes_consumed, stats.waiting, stats.total_delay_seconds) == (
        3,
        3584,
        0,
        2.5,
    )


async def test_concurrent_senders_are_served_in_call_order() -> None:
    """Three tasks ask at one instant: each waits for its own bytes and for those queued before it."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    b = TokenBucket(8 * 1024, 1024, clock=lambda: 0.0, sleep=record)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(b.wait_consume(n)) for n in (1024, 512, 256)]
    assert [t.result() for t in tasks] == [0.0, 0.5, 0.75]
    assert slept == [0.5, 0.75]


async def _wait_forever(seconds: float) -> None:
    await asyncio.Event().wait()


async def test_a_cancelled_wait_refunds_its_tokens() -> None:
    clock = FakeClock()
    b = TokenBucket(8 * 1024, 1024, clock=clock, sleep=_wait_forever)
    assert b.reserve(1024) == 0.0
    task = asyncio.create_task(b.wait_consume(2048))
    await asyncio.sleep(0)
    assert b.statistics().waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = b.statistics()
    assert (stats.waiting, stats.messages, stats.bytes_consumed) == (0, 1, 1024)
    assert b.tokens() == 0.0  # only the first message's 1024 bytes are charged
    assert b.reserve(1024) == 1.0


async def test_default_clock_is_the_running_loops_clock() -> None:
    b = TokenBucket(8_000_000)
    assert b.burst_bytes == default_burst_bytes(8_000_000)
    assert await b.wait_consume(100) == 0.0
    assert b.tokens() <= b.burst_bytes
