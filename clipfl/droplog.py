"""Log lines for rejected messages that cannot amplify: a bounded summary, rate-limited per peer.

Issue 14 found that a rejected message was logged with the repr of its contents (25 MB of garbage
made 100 MB of log) and that aiohttp logged a traceback for each malformed HTTP request. Here:

- ``summarize`` describes a drop by its type (when the decoder got that far), frame count, size and
  peer, and the reason cut to one printable line; never the contents.
- ``DropLog`` decides which drops get a line: per peer a token bucket (``burst`` lines at once, then
  one per ``interval``), and the same over all peers (``global_burst``), so that many peers cannot
  add up to a flood either. What it holds back is counted and said in the peer's next line, or, for
  peers it stopped tracking (at most ``max_peers``), in one summary line per interval. Sans-IO: it
  returns the lines and the driver logs them; the clock is injected, so tests need no sleeping.
- ``OneLineErrors`` is a ``logging.Filter`` that turns a record carrying an expected exception (a
  malformed HTTP request) into one line without a traceback.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Drop", "DropLog", "DropLogStatistics", "OneLineErrors", "one_line", "peer_label", "summarize"]

MAX_REASON = 200


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """``text`` as one line of at most ``limit`` characters: line breaks and runs of white space
    become one space and other non-printable characters ``?`` (a peer must not forge log lines)."""
    cut = text[: limit * 2]
    clean = " ".join("".join(c if c.isprintable() or c.isspace() else "?" for c in cut).split())
    return clean[:limit] + "..." if len(clean) > limit or len(text) > len(cut) else clean


def peer_label(peer: bytes) -> str:
    """The first 6 bytes of a routing id in hex: enough to tell peers apart in a log."""
    return peer[:6].hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class Drop:
    """What may be said about one rejected message: never its contents."""

    peer: bytes
    reason: str
    frames: int
    nbytes: int
    message_type: str | None = None


def summarize(drop: Drop) -> str:
    """One bounded line, e.g. ``dropped fit_res from peer 3fa2c4d5e6f7 (3 frames, 1204 bytes): why``."""
    kind = one_line(drop.message_type, 40) if drop.message_type else "message"
    return (
        f"dropped {kind} from peer {peer_label(drop.peer)} ({drop.frames} frames, {drop.nbytes} bytes): "
        f"{one_line(drop.reason)}"
    )


@dataclass(frozen=True, slots=True)
class DropLogStatistics:
    """Counters for the metrics endpoint: every drop is counted, whether or not it got a line."""

    dropped: int
    dropped_bytes: int
    logged: int
    held_back: int
    peers_tracked: int


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def refill(self, now: float, capacity: float, rate: float) -> bool:
        """Add what ``rate`` earned since the last call; say whether a token is there."""
        self.tokens = min(capacity, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now
        return self.tokens >= 1.0


class _Peer:
    __slots__ = ("bucket", "held", "held_bytes", "since")

    def __init__(self, bucket: _Bucket) -> None:
        self.bucket = bucket
        self.held = self.held_bytes = 0
        self.since = 0.0


class DropLog:
    """Which drops get a log line. ``record`` returns the lines (zero, or one) to log now."""

    def __init__(
        self,
        *,
        burst: int = 5,
        interval: float = 60.0,
        global_burst: int = 50,
        max_peers: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or global_burst < 1 or max_peers < 1 or interval <= 0:
            raise ValueError("DropLog needs burst, global_burst, max_peers >= 1 and interval > 0")
        self._burst, self._interval, self._global_burst = burst, interval, global_burst
        self._max_peers = max_peers
        self._clock = clock
        self._peers: OrderedDict[bytes, _Peer] = OrderedDict()
        self._global = _Bucket(global_burst, clock())
        # Drops held back for peers no longer tracked, said in one line at most once per interval.
        self._orphans = self._orphan_bytes = 0
        self._orphan_peers = 0  # peers evicted with drops held back (one evicted twice counts twice)
        self._orphans_said = clock()
        self._dropped = self._dropped_bytes = self._logged = 0

    def record(self, drop: Drop) -> list[str]:
        """Count ``drop`` and return what to log for it: its summary (saying how many drops of this
        peer were held back before it), a summary of untracked peers' drops, or nothing."""
        now = self._clock()
        self._dropped += 1
        self._dropped_bytes += drop.nbytes
        lines = self._orphan_line(now)
        peer = self._peer(drop.peer, now)
        peer_ok = peer.bucket.refill(now, self._burst, 1.0 / self._interval)
        global_ok = self._global.refill(now, self._global_burst, self._global_burst / self._interval)
        if peer_ok and global_ok:
            peer.bucket.tokens -= 1.0
            self._global.tokens -= 1.0
            line = summarize(drop)
            if peer.held:
                line += (
                    f"; {peer.held} earlier drops ({peer.held_bytes} bytes) from this peer "
                    f"in the last {now - peer.since:.0f} s were not logged"
                )
                peer.held = peer.held_bytes = 0
            lines.append(line)
        else:
            if not peer.held:
                peer.since = now
            peer.held += 1
            peer.held_bytes += drop.nbytes
        self._logged += len(lines)
        return lines

    def flush(self) -> list[str]:
        """One line for every drop still held back (call it at the end of a round or the run)."""
        for key, peer in self._peers.items():
            self._orphan(key, peer)
        now = self._clock()
        lines = self._orphan_line(now, force=True)
        self._logged += len(lines)
        return lines

    def statistics(self) -> DropLogStatistics:
        held = self._orphans + sum(p.held for p in self._peers.values())
        return DropLogStatistics(self._dropped, self._dropped_bytes, self._logged, held, len(self._peers))

    def _peer(self, key: bytes, now: float) -> _Peer:
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = _Peer(_Bucket(self._burst, now))
            if len(self._peers) > self._max_peers:
                self._orphan(*self._peers.popitem(last=False))
        else:
            self._peers.move_to_end(key)
        return peer

    def _orphan(self, key: bytes, peer: _Peer) -> None:
        if peer.held:
            self._orphans += peer.held
            self._orphan_bytes += peer.held_bytes
            self._orphan_peers += 1
            peer.held = peer.held_bytes = 0

    def _orphan_line(self, now: float, *, force: bool = False) -> list[str]:
        if not self._orphans or (not force and now - self._orphans_said < self._interval):
            return []
        line = (
            f"{self._orphans} more dropped messages ({self._orphan_bytes} bytes) from "
            f"{self._orphan_peers} peers were not logged"
        )
        self._orphans = self._orphan_bytes = 0
        self._orphan_peers = 0
        self._orphans_said = now
        return [line]


class OneLineErrors(logging.Filter):
    """Rewrite a record whose exception is one of ``expected`` into one line without a traceback.

    For aiohttp's server logger: a malformed HTTP request is an ``HttpProcessingError`` that aiohttp
    logs with ``exc_info`` (a dozen lines, quoting the peer's bytes); a bug in a handler is anything
    else and keeps its traceback.
    """

    def __init__(self, *expected: type[BaseException]) -> None:
        super().__init__()
        self._expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, self._expected):
            detail = one_line(f"{type(exc).__name__}: {exc}")
            record.msg = f"{one_line(record.getMessage())}: {detail}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:  # the peer's fault, not ours: a warning at most
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
