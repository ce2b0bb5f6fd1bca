"""In-process transport over asyncio queues: the same interface as ZeroMQ, for fast tests.

A ``MemoryHub`` plays the network: servers bind names on it, clients connect to a name. Frames
are passed as ``bytes`` copies, so that a sender that reuses its buffers cannot change what was
sent, as on a real network. Closing a client makes the server see ``PeerLeft`` at once. A message
over the server's ``MessageLimits`` becomes ``Rejected``, as on ZeroMQ.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from transports.base import (
    ClientTransport,
    Frame,
    MessageLimits,
    PeerJoined,
    PeerLeft,
    Received,
    Rejected,
    ServerEvent,
    ServerTransport,
    TransportStatistics,
    frames_nbytes,
)
from transports.errors import ConnectionLost, TransportError

__all__ = ["MemoryClientTransport", "MemoryHub", "MemoryServerTransport"]


class MemoryHub:
    """A namespace of in-process addresses."""

    def __init__(self) -> None:
        self._servers: dict[str, MemoryServerTransport] = {}
        self._ids = itertools.count(1)

    def server(self, **kwargs: Any) -> MemoryServerTransport:
        return MemoryServerTransport(self, **kwargs)

    def client(self) -> MemoryClientTransport:
        return MemoryClientTransport(self, f"mem-peer-{next(self._ids)}".encode())


def _copy(frames: Sequence[Frame]) -> list[Frame]:
    return [bytes(f) for f in frames]


def _stats(peers: int, counters: list[int], queued: int) -> TransportStatistics:
    rejected = counters[4:] or [0, 0]
    return TransportStatistics(
        peers, counters[0], counters[1], counters[2], counters[3], queued, rejected[0], rejected[1]
    )


class MemoryServerTransport(ServerTransport):
    def __init__(self, hub: MemoryHub, *, max_queued: int = 256, limits: MessageLimits | None = None) -> None:
        self._hub = hub
        self._limits = limits or MessageLimits()
        self._address: str | None = None
        self._events: asyncio.Queue[ServerEvent] = asyncio.Queue(max_queued)
        self._clients: dict[bytes, MemoryClientTransport] = {}
        self._counters = [0, 0, 0, 0, 0, 0]  # messages in, out, bytes in, out, rejected messages, bytes

    async def bind(self, address: str) -> str:
        if address in self._hub._servers:
            raise TransportError(f"cannot bind {address}: address in use")
        self._hub._servers[address] = self
        self._address = address
        return address

    async def _arrive(self, client: MemoryClientTransport, frames: list[Frame]) -> None:
        if client.peer not in self._clients:
            self._clients[client.peer] = client
            await self._events.put(PeerJoined(client.peer))
        nbytes = frames_nbytes(frames)
        reason = self._limits.refusal(len(frames), nbytes)
        if reason is not None or any(len(f) > self._limits.max_frame_bytes for f in frames):
            self._counters[4] += 1
            self._counters[5] += nbytes
            reason = reason or f"a frame of more than {self._limits.max_frame_bytes} bytes"
            await self._events.put(Rejected(client.peer, reason, len(frames), nbytes))
            return
        self._counters[0] += 1
        self._counters[2] += nbytes
        await self._events.put(Received(client.peer, frames))

    async def _leave(self, client: MemoryClientTransport) -> None:
        if self._clients.pop(client.peer, None) is not None:
            await self._events.put(PeerLeft(client.peer, "closed"))

    async def recv(self) -> ServerEvent:
        return await self._events.get()

    async def send(self, peer: bytes, frames: Sequence[Frame]) -> None:
        client = self._clients.get(peer)
        if client is None:
            return
        copied = _copy(frames)
        self._counters[1] += 1
        self._counters[3] += frames_nbytes(copied)
        await client._inbox.put(copied)

    def disconnect(self, peer: bytes) -> None:
        self._clients.pop(peer, None)

    def statistics(self) -> TransportStatistics:
        return _stats(len(self._clients), self._counters, self._events.qsize())

    async def close(self) -> None:
        if self._address is not None:
            self._hub._servers.pop(self._address, None)
            self._address = None
        for client in list(self._clients.values()):
            client._inbox.put_nowait(ConnectionLost("server closed"))
        self._clients.clear()


class MemoryClientTransport(ClientTransport):
    def __init__(self, hub: MemoryHub, peer: bytes, *, max_queued: int = 64) -> None:
        self._hub = hub
        self.peer = peer
        self._server: MemoryServerTransport | None = None
        self._inbox: asyncio.Queue[list[Frame] | ConnectionLost] = asyncio.Queue(max_queued)
        self._counters = [0, 0, 0, 0]

    async def connect(self, address: str) -> None:
        server = self._hub._servers.get(address)
        if server is None:
            raise TransportError(f"cannot connect to {address}: nothing is bound there")
        self._server = server

    async def send(self, frames: Sequence[Frame]) -> None:
        if self._server is None:
            raise ConnectionLost("not connected")
        copied = _copy(frames)
        self._counters[1] += 1
        self._counters[3] += frames_nbytes(copied)
        await self._server._arrive(self, copied)

    async def recv(self) -> list[Frame]:
        item = await self._inbox.get()
        if isinstance(item, ConnectionLost):
            raise item
        self._counters[0] += 1
        self._counters[2] += frames_nbytes(item)
        return item

    def statistics(self) -> TransportStatistics:
        return _stats(int(self._server is not None), self._counters, self._inbox.qsize())

    async def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server._leave(self)
