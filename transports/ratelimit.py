"""An asyncio token bucket with the semantics of Linux's ``tbf`` qdisc, for ``--shape app``.

When an application cannot use real traffic control (no root, no network namespaces), the transport
caps a client's upload and download itself: before a message of ``n`` bytes leaves (or after it
arrives and before it is handed on), the transport awaits ``bucket.wait_consume(n)``. The caps must
mean the same thing as the caps of Linux's ``tbf`` qdisc (which an emulator may apply instead), so the
bucket follows ``tbf``:

* tokens are bytes; they accrue at ``rate_bps / 8`` per second up to ``burst_bytes``;
* a message of ``n <= burst`` bytes waits until the bucket holds ``n`` tokens, then takes them;
* messages are served first come, first served (tbf's queue is a FIFO);
* a message larger than the burst is allowed: it goes into debt. tbf would cut it into packets of at
  most ``burst`` bytes, and the last packet would leave ``(n - burst) / rate`` seconds after the
  first; the bucket releases the message at that same instant (when its last byte would have left)
  and later messages wait for the debt to be repaid. That is the honest model for an upload: the
  sender learns it is done when its last byte is out.

Implementation: the generic cell rate algorithm (GCRA, the ATM form of the token bucket). The one
state is ``full_at``, the time at which the bucket would be full again if nothing else were sent.
Charging ``n`` bytes moves it ``n / rate`` later, and the message may leave once the balance
``burst - rate * (full_at - now)`` is non-negative. One number instead of (tokens, last update) means
no clamping, no drift, and a waiter's delay is known the moment it arrives, so tests compute waits
from an injected clock and never measure sleeps.

The bucket serves one event loop and is not thread-safe (no transport shares it across threads).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from transports.errors import TransportConfigError

__all__ = [
    "BucketStatistics",
    "TokenBucket",
    "default_burst_bytes",
    "tcp_wire_bytes",
]

# The Ethernet frame that carries a full TCP segment on a 1500-byte MTU link, as tbf counts it.
ETHERNET_FRAME_BYTES = 1514
# TCP payload per full segment on that link: 1500 - 20 (IPv4) - 32 (TCP with timestamps).
TCP_MSS_BYTES = 1448
# Kernel timers tick at 250 Hz on the coarsest common configuration (CONFIG_HZ_250): tbf's manual asks
# for at least rate / HZ bytes of burst so that the bucket refills between two timer ticks.
_COARSEST_HZ = 250
# Four full frames keep TCP's small bursts (delayed ACKs release two or three segments at once) from
# being dropped at low rates, while adding at most a few milliseconds of free transfer.
_MIN_BURST_FRAMES = 4


def default_burst_bytes(rate_bps: int) -> int:
    """The bucket size for a rate, in the app limiter and in any tbf qdisc that must agree with it.

    ``max(rate / 250 Hz, 4 Ethernet frames)``: large enough for tbf to reach its rate on a 250 Hz
    kernel, small enough that the free burst is a negligible part of any model transfer (6 KB, or
    4 ms of traffic at high rates).
    """
    if rate_bps <= 0:
        raise TransportConfigError(f"rate must be positive, got {rate_bps} bit/s")
    return max(math.ceil(rate_bps / 8 / _COARSEST_HZ), _MIN_BURST_FRAMES * ETHERNET_FRAME_BYTES)


def tcp_wire_bytes(payload_bytes: int) -> int:
    """The bytes that tc's tbf counts for ``payload_bytes`` of TCP payload on a 1500-byte MTU link.

    tbf counts whole Ethernet frames (66 bytes of headers per 1448 bytes of payload, 4.6 %), the app
    limiter counts what it is given. A transport that charges ``tcp_wire_bytes(n)`` for an n-byte
    message makes ``--shape app`` as strict as ``--shape tc`` (measured: 1 MB through a 4 mbit tbf
    takes 2.08 s, where 1 MB of payload alone would take 2.00 s).
    """
    if payload_bytes < 0:
        raise TransportConfigError(f"payload size must be non-negative, got {payload_bytes}")
    segments = -(-payload_bytes // TCP_MSS_BYTES)
    return payload_bytes + segments * (ETHERNET_FRAME_BYTES - TCP_MSS_BYTES)


@dataclass(frozen=True, slots=True)
class BucketStatistics:
    """A snapshot of a bucket, for the metrics endpoint and the dashboard."""

    rate_bps: int | None
    burst_bytes: int
    tokens: float  # balance now, in bytes; negative while a large message's debt is being repaid
    messages: int
    bytes_consumed: int
    waiting: int  # tasks inside wait_consume right now
    total_delay_seconds: float  # sum of the delays handed out (cancelled waits included)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class TokenBucket:
    """A tbf-equivalent rate limiter for one direction of one link; ``rate_bps=None`` is unlimited.

    ``clock`` returns seconds (default: the running loop's ``time()``, the clock of its timers);
    ``sleep`` waits a number of seconds (default ``asyncio.sleep``). Tests inject both.
    """

    __slots__ = (
        "_burst_bytes",
        "_bytes_consumed",
        "_clock",
        "_full_at",
        "_messages",
        "_rate_bps",
        "_sleep",
        "_total_delay",
        "_waiting",
    )

    def __init__(
        self,
        rate_bps: int | None,
        burst_bytes: int | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_bps is not None and (not isinstance(rate_bps, int) or isinstance(rate_bps, bool)):
            raise TransportConfigError(f"rate must be an integer number of bit/s or None, got {rate_bps!r}")
        if rate_bps is not None and rate_bps <= 0:
            raise TransportConfigError(f"rate must be positive (None means unlimited), got {rate_bps} bit/s")
        if burst_bytes is None:
            burst_bytes = default_burst_bytes(rate_bps) if rate_bps is not None else 0
        elif burst_bytes <= 0:
            raise TransportConfigError(f"burst must be positive, got {burst_bytes} bytes")
        self._rate_bps = rate_bps
        self._burst_bytes = burst_bytes
        self._clock = clock if clock is not None else _loop_time
        self._sleep = sleep
        self._full_at = -math.inf  # full since forever: the first burst leaves at once
        self._messages = 0
        self._bytes_consumed = 0
        self._waiting = 0
        self._total_delay = 0.0

    @property
    def rate_bps(self) -> int | None:
        return self._rate_bps

    @property
    def burst_bytes(self) -> int:
        return self._burst_bytes

    def _seconds(self, nbytes: int) -> float:
        assert self._rate_bps is not None
        return nbytes * 8 / self._rate_bps

    def reserve(self, nbytes: int) -> float:
        """Charge ``nbytes`` now and return how long the message must wait before it may go.

        This is the whole algorithm, synchronous and deterministic; ``wait_consume`` only sleeps for
        the returned delay. Reservations are served in call order (FIFO), as tbf serves packets.
        """
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise TransportConfigError(f"message size must be a non-negative integer, got {nbytes!r}")
        self._messages += 1
        self._bytes_consumed += nbytes
        if self._rate_bps is None:
            return 0.0
        now = self._clock()
        self._full_at = max(self._full_at, now) + self._seconds(nbytes)
        delay = max(0.0, self._full_at - self._seconds(self._burst_bytes) - now)
        self._total_delay += delay
        return delay

    def refund(self, nbytes: int) -> None:
        """Give back the tokens of a message that was reserved but never sent (its sender was cancelled).

        Messages reserved after it keep the delays they were given: they wait a little longer than
        tbf would have made them, never shorter.
        """
        if self._rate_bps is not None:
            self._full_at -= self._seconds(nbytes)
        self._messages -= 1
        self._bytes_consumed -= nbytes

    async def wait_consume(self, nbytes: int) -> float:
        """Wait until a message of ``nbytes`` may pass the cap, take its tokens, return the delay.

        If the waiting task is cancelled, the tokens are refunded: the message never went.
        """
        delay = self.reserve(nbytes)
        if delay <= 0.0:
            return 0.0
        self._waiting += 1
        try:
            await self._sleep(delay)
        except BaseException:
            self.refund(nbytes)
            raise
        finally:
            self._waiting -= 1
        return delay

    def tokens(self) -> float:
        """The balance now, in bytes (``burst`` when idle, negative while in debt)."""
        if self._rate_bps is None:
            return math.inf
        backlog = max(0.0, self._full_at - self._clock())
        return self._burst_bytes - backlog * self._rate_bps / 8

    def statistics(self) -> BucketStatistics:
        return BucketStatistics(
            rate_bps=self._rate_bps,
            burst_bytes=self._burst_bytes,
            tokens=self.tokens(),
            messages=self._messages,
            bytes_consumed=self._bytes_consumed,
            waiting=self._waiting,
            total_delay_seconds=self._total_delay,
        )

    def __repr__(self) -> str:
        return f"TokenBucket(rate_bps={self._rate_bps!r}, burst_bytes={self._burst_bytes})"
