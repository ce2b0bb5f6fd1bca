"""The attacker's side: raw ZeroMQ DEALER sockets, and the tally of what it sent and what it got.

An attack runs in a worker thread with plain (blocking) pyzmq, so that a flood never stalls the
campaign's event loop, which watches the processes. Everything the server answers is decoded with the
protocol's public codec and classified: ``Reject`` and ``NotRegistered`` are what a stranger may get;
anything else (a ``Welcome``, a round's messages, a receipt, ``Shutdown``) goes only to registered
clients, so a stranger that receives one has taken effect (an eviction or an impersonation).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from clipfl.wire import DecodeError, decode, registered_types

__all__ = ["AttackContext", "Stranger", "Tally"]

_NAMES = {cls: name for name, cls in registered_types().items()}
HARMLESS = frozenset({"reject", "not_registered"})
HEARTBEAT = b"\x00heartbeat"  # the transport's liveness frame (a zero byte first): public wire format


@dataclass(slots=True)
class Tally:
    """What one attack did and what it got back."""

    sent: int = 0
    sent_bytes: int = 0
    largest_message_bytes: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    privileged: int = 0  # replies only a registered client should ever get
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_send(self, frames: list[bytes] | list[Any]) -> None:
        with self._lock:
            self.sent += 1
            size = sum(len(f) for f in frames)
            self.sent_bytes += size
            self.largest_message_bytes = max(self.largest_message_bytes, size)

    def count_reply(self, frames: list[bytes]) -> None:
        if len(frames) == 1 and frames[0] == HEARTBEAT:
            name = "heartbeat"
        else:
            try:
                name = _NAMES.get(type(decode(frames)), "unknown")
            except DecodeError:
                name = "undecodable"
        with self._lock:
            self.replies[name] += 1
            if name not in HARMLESS and name != "heartbeat":
                self.privileged += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "sent_bytes": self.sent_bytes,
            "largest_message_bytes": self.largest_message_bytes,
            "replies": dict(self.replies),
            "privileged_replies": self.privileged,
            "notes": list(self.notes),
        }


@dataclass(slots=True, kw_only=True)
class AttackContext:
    """What an attack thread may read: the address, the run's phase, its budget, a stop flag."""

    address: str
    port: int
    clients: int
    is_started: Callable[[], bool]
    round_of: Callable[[], int]  # rounds ended so far
    stop: threading.Event
    release_clients: threading.Event
    budget: dict[str, int]
    rng: random.Random
    zmq_context: zmq.Context[Any]
    server_rss: Callable[[], int | None]  # the live server's resident set now (bytes), from /proc

    def wait_started(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_started() and not self.stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.is_started() and not self.stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless told to stop; True when the attack should go on."""
        return not self.stop.wait(seconds)


class Stranger:
    """One DEALER connection to the server, with a routing id of the attacker's choice."""

    def __init__(self, ctx: AttackContext, tally: Tally, routing_id: bytes | None = None) -> None:
        self.tally = tally
        self._stop = ctx.stop
        self.sock: zmq.Socket[Any] = ctx.zmq_context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 2000)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(ctx.address)

    def send(self, frames: list[bytes] | list[Any], *, copy: bool = True, wait: float = 0.0) -> bool:
        """Queue ``frames``; with ``wait``, block up to that long until ZeroMQ has written them out
        (zero-copy sends are tracked), so that closing the socket cannot cut the message short. The
        wait ends early when the campaign stops the attacks (a loaded machine writes a GiB slowly)."""
        try:
            tracker = self.sock.send_multipart(frames, copy=copy, track=wait > 0)
        except zmq.Again:
            return False
        self.tally.count_send(frames)
        if wait > 0 and tracker is not None:
            deadline = time.monotonic() + wait
            while not tracker.done and not self._stop.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(zmq.NotDone):
                    tracker.wait(0.2)
        return True

    def drain(self, wait: float = 0.0) -> int:
        """Read and classify every reply that arrives within ``wait`` seconds."""
        got = 0
        deadline = time.monotonic() + wait
        while True:
            timeout = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(timeout):
                return got
            self.tally.count_reply(self.sock.recv_multipart())
            got += 1

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.drain()
        self.sock.close(linger=0)
