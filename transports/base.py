"""The transport interface: bytes, frames, peers. No federated learning in here.

A server transport binds one address and turns the network into a stream of events:
``PeerJoined``, ``Received(peer, frames)``, ``PeerLeft``. A client transport connects to that address
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
    "PeerJoined",
    "PeerLeft",
    "Received",
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


ServerEvent = PeerJoined | PeerLeft | Received


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """Counters for the metrics endpoint; application payload only (heartbeats not counted)."""

    peers: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    queued_events: int


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
