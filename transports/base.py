"""The transport interface: bytes, frames, peers. No federated learning in here.

A server transport binds one address and turns the network into a stream of events:
``PeerJoined``, ``Received(peer, frames)``, ``Rejected(peer, reason, frames, nbytes)`` (a message
over the ``MessageLimits``, read and discarded), ``PeerLeft``. A client transport connects to that address
and sends and receives multipart messages. Both are async context managers. Liveness is the
transport's job: heartbeats flow underneath the application's messages, a silent peer becomes
``PeerLeft`` on the server within ``heartbeat_timeout``, and a silent server makes a client's
``recv`` raise ``ConnectionLost`` (see ``transports.errors``).

Implementations: ``transports.zmq`` (ROUTER/DEALER over TCP, the real one) and
``transports.memory`` (asyncio queues, for fast tests). Only ``transports/zmq.py`` imports zmq.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

__all__ = [
    "ClientTransport",
    "Frame",
    "MessageLimits",
    "PeerJoined",
    "PeerLeft",
    "Received",
    "Rejected",
    "ServerEvent",
    "ServerTransport",
    "TransportStatistics",
    "frames_nbytes",
]

Frame = bytes | memoryview
"""One frame of a multipart message. Received frames support the buffer protocol."""


def frames_nbytes(frames: Sequence[Any]) -> int:
    """The payload size of a multipart message (any objects with the buffer protocol, zmq frames
    included): what the byte counters and the rate limits count."""
    return sum(memoryview(f).nbytes for f in frames)


@dataclass(frozen=True, slots=True)
class PeerJoined:
    peer: bytes


@dataclass(frozen=True, slots=True)
class PeerLeft:
    peer: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Received:
    peer: bytes
    frames: list[Frame]
    credential: str | None = None
    """The key the peer authenticated with (CurveZMQ: its public key, Z85), None without one."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message from ``peer`` over the ``MessageLimits``: read frame by frame and discarded as it
    arrived, never handed on. ``frames`` and ``nbytes`` are what the peer sent (for the log)."""

    peer: bytes
    reason: str
    frames: int
    nbytes: int


ServerEvent = PeerJoined | PeerLeft | Received | Rejected


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageLimits:
    """How large one received multipart message may be, checked as its frames are read.

    The defaults equal the codec's (``clipfl.wire.Limits``: 512 frames, 256 MiB a tensor, 512 MiB in
    all; a test holds them equal); a driver passes its codec limits in, since transports know no
    codec. ``max_frame_bytes`` also becomes ZeroMQ's ``MAXMSGSIZE``, which ZeroMQ enforces per frame
    while it reads the socket (a longer frame closes the connection).
    """

    max_frames: int = 512
    max_frame_bytes: int = 256 << 20
    max_total_bytes: int = 512 << 20

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_frame_bytes", "max_total_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MessageLimits.{name} must be positive")

    def refusal(self, frames: int, nbytes: int) -> str | None:
        """Why a message of ``frames`` frames and ``nbytes`` bytes so far is refused, or None."""
        if frames > self.max_frames:
            return f"more than {self.max_frames} frames"
        if nbytes > self.max_total_bytes:
            return f"more than {self.max_total_bytes} bytes"
        return None


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """Counters for the metrics endpoint; application payload only (heartbeats not counted)."""

    peers: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    queued_events: int
    rejected_messages: int = 0
    """Messages over the ``MessageLimits``, discarded as they arrived."""
    rejected_bytes: int = 0


class ServerTransport(abc.ABC):
    """The server's side: one bound address, many peers."""

    @abc.abstractmethod
    async def bind(self, address: str) -> str:
        """Bind ``address`` and return the address that clients should connect to."""

    @abc.abstractmethod
    async def recv(self) -> ServerEvent:
        """Wait for the next event."""

    @abc.abstractmethod
    async def send(self, peer: bytes, frames: Sequence[Frame]) -> None:
        """Queue a multipart message to ``peer``; unknown or vanished peers are ignored."""

    @abc.abstractmethod
    def disconnect(self, peer: bytes) -> None:
        """Forget ``peer``: no ``PeerLeft`` follows, its later messages count as a new peer."""

    @abc.abstractmethod
    def statistics(self) -> TransportStatistics: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class ClientTransport(abc.ABC):
    """A client's side: one connection to the server."""

    @abc.abstractmethod
    async def connect(self, address: str) -> None: ...

    @abc.abstractmethod
    async def send(self, frames: Sequence[Frame]) -> None: ...

    @abc.abstractmethod
    async def recv(self) -> list[Frame]:
        """Wait for the next message; raise ``ConnectionLost`` if the server went silent."""

    @abc.abstractmethod
    def statistics(self) -> TransportStatistics: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
