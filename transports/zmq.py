"""ZeroMQ transport: ROUTER on the server, DEALER on each client, driven by ``zmq.asyncio``.

The only module that imports zmq (with ``transports.curve``, its CurveZMQ part); zmq errors become
``TransportError`` (``transports.errors``) here.

- Large frames are sent with ``copy=False`` (pyzmq copies frames under its ``copy_threshold``
  itself, where copying is cheaper than tracking).
- Heartbeats: each client sends ``HEARTBEAT`` every ``heartbeat_interval`` seconds and the server
  answers each one, so both sides learn of the other's silence within ``heartbeat_timeout``.
  A heartbeat is one frame starting with a zero byte, which no msgpack map can start with.
- Bounds: ZMQ high-water marks on the sockets, ``MAXMSGSIZE`` so that a peer cannot make ZeroMQ
  allocate an unbounded message, and a bounded number of received messages waiting for the
  application (the reader stops reading when it is reached, so back-pressure reaches the sender).
- ``ROUTER_HANDOVER`` lets a client that reconnects with the same identity take its place.
- CurveZMQ (``curve=``, see ``transports.curve``): encrypted connections, and on the server a ZAP
  handler that admits only allow-listed client keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from transports.base import (
    ClientTransport,
    Frame,
    PeerJoined,
    PeerLeft,
    Received,
    ServerEvent,
    ServerTransport,
    TransportStatistics,
    frames_nbytes,
)
from transports.errors import ConnectionLost, TransportConfigError, TransportError
from transports.liveness import Liveness
from transports.ratelimit import TokenBucket, tcp_wire_bytes

if TYPE_CHECKING:
    from transports.curve import CurveClient, CurveGate, CurveServer

__all__ = ["HEARTBEAT", "ZmqClientTransport", "ZmqServerTransport"]

log = logging.getLogger(__name__)

# One frame starting with a zero byte, which no msgpack map (the application's messages) starts with.
HEARTBEAT = b"\x00heartbeat"


class _Counters:
    __slots__ = ("bytes_in", "bytes_out", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0


class ZmqServerTransport(ServerTransport):
    def __init__(
        self,
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 10.0,
        max_queued: int = 256,
        high_water_mark: int = 1000,
        max_message_bytes: int = 1 << 30,
        socket_options: dict[int, Any] | None = None,
        curve: CurveServer | None = None,
    ) -> None:
        self._heartbeat_timeout = heartbeat_timeout
        self._curve = curve  # CurveZMQ: encrypt, and admit only allow-listed client keys
        self._gate: CurveGate | None = None
        self._high_water_mark = high_water_mark
        self._max_message_bytes = max_message_bytes
        self._socket_options = socket_options or {}
        self._ctx = zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[ServerEvent | ConnectionLost] = asyncio.Queue()
        self._space = asyncio.Semaphore(max_queued)
        self._liveness: Liveness[bytes] = Liveness(heartbeat_timeout, self._expire)
        self._counters = _Counters()
        self._closed = False

    async def bind(self, address: str) -> str:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._high_water_mark)
        sock.setsockopt(zmq.RCVHWM, self._high_water_mark)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        for option, value in self._socket_options.items():
            sock.setsockopt(option, value)
        if self._curve is not None:
            if self._gate is None:  # the ZAP handler first: without one, libzmq admits any CURVE key
                self._gate = self._curve.start(self._ctx)
            self._curve.secure(sock)
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise TransportError(f"cannot bind {address}: {exc}") from exc
        self._socket = sock
        self._reader = asyncio.create_task(self._read(), name="zmq-server-reader")
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return endpoint.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:")

    async def _read(self) -> None:
        assert self._socket is not None
        sock = self._socket
        try:
            while True:
                await self._space.acquire()
                released = False
                try:
                    parts = await sock.recv_multipart(copy=False)
                    peer = parts[0].bytes
                    body = parts[1:]
                    if self._liveness.touch(peer):
                        self._events.put_nowait(PeerJoined(peer))
                    if len(body) == 1 and body[0].bytes == HEARTBEAT:
                        await self._send_raw([peer, HEARTBEAT])
                        continue
                    self._counters.messages_in += 1
                    self._counters.bytes_in += frames_nbytes(body)
                    self._events.put_nowait(Received(peer, [f.buffer for f in body]))
                    released = True  # recv() releases the slot when the application takes it
                finally:
                    if not released:
                        self._space.release()
        except (asyncio.CancelledError, zmq.ZMQError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.error("server socket failed: %s", exc)
                self._events.put_nowait(ConnectionLost(f"server socket failed: {exc}"))
            raise

    def _expire(self, peer: bytes) -> None:
        self._events.put_nowait(PeerLeft(peer, f"silent for {self._heartbeat_timeout:g} s"))

    async def recv(self) -> ServerEvent:
        if self._closed:
            raise ConnectionLost("transport closed")
        event = await self._events.get()
        if isinstance(event, ConnectionLost):
            raise event
        if isinstance(event, Received):
            self._space.release()
        return event

    async def _send_raw(self, parts: list[Any]) -> None:
        assert self._socket is not None
        try:
            await self._socket.send_multipart(parts, copy=False)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return
            raise TransportError(f"send failed: {exc}") from exc

    async def send(self, peer: bytes, frames: Sequence[Frame]) -> None:
        if self._socket is None or self._closed:
            raise TransportError("server transport is not bound")
        self._counters.messages_out += 1
        self._counters.bytes_out += frames_nbytes(frames)
        await self._send_raw([peer, *frames])

    def disconnect(self, peer: bytes) -> None:
        self._liveness.forget(peer)

    def statistics(self) -> TransportStatistics:
        c = self._counters
        return TransportStatistics(
            peers=len(self._liveness),
            messages_in=c.messages_in,
            messages_out=c.messages_out,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            queued_events=self._events.qsize(),
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._liveness.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
                await self._reader
        if self._socket is not None:
            self._socket.close(linger=0)
        if self._gate is not None:
            self._gate.stop()
        self._ctx.term()


class ZmqClientTransport(ClientTransport):
    def __init__(
        self,
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 10.0,
        max_queued: int = 64,
        high_water_mark: int = 1000,
        max_message_bytes: int = 1 << 30,
        identity: bytes | None = None,
        socket_options: dict[int, Any] | None = None,
        upload_bps: int | None = None,
        download_bps: int | None = None,
        curve: CurveClient | None = None,
    ) -> None:
        if heartbeat_interval <= 0 or heartbeat_timeout <= heartbeat_interval:
            raise TransportConfigError(
                "need 0 < heartbeat_interval < heartbeat_timeout, "
                f"got {heartbeat_interval:g} s and {heartbeat_timeout:g} s"
            )
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._high_water_mark = high_water_mark
        self._max_message_bytes = max_message_bytes
        self._identity = identity
        self._socket_options = socket_options or {}
        self._curve = curve  # CurveZMQ: the server's public key and this client's key pair
        self._ctx = zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[list[Frame] | ConnectionLost] = asyncio.Queue(max_queued)
        self._liveness: Liveness[str] = Liveness(heartbeat_timeout, self._expire)
        self._counters = _Counters()
        self._lost: ConnectionLost | None = None
        # --shape app: token buckets with tbf's semantics, charged what tbf would count on the wire.
        self._upload = TokenBucket(upload_bps) if upload_bps else None
        self._download = TokenBucket(download_bps) if download_bps else None
        self._throttling = False

    async def connect(self, address: str) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self._high_water_mark)
        sock.setsockopt(zmq.RCVHWM, self._high_water_mark)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes)
        if self._identity is not None:
            sock.setsockopt(zmq.ROUTING_ID, self._identity)
        for option, value in self._socket_options.items():
            sock.setsockopt(option, value)
        if self._curve is not None:
            self._curve.secure(sock)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise TransportError(f"cannot connect to {address}: {exc}") from exc
        self._socket = sock
        self._liveness.touch("server")
        self._tasks = [
            asyncio.create_task(self._read(), name="zmq-client-reader"),
            asyncio.create_task(self._beat(), name="zmq-client-heartbeat"),
        ]

    def _expire(self, key: str) -> None:
        if self._throttling:  # the server is not silent: we are pacing its message ourselves
            self._liveness.touch(key)
            return
        self._lose(ConnectionLost(f"server silent for {self._heartbeat_timeout:g} s"))

    def _lose(self, error: ConnectionLost) -> None:
        if self._lost is None:
            self._lost = error
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(error)

    async def _read(self) -> None:
        assert self._socket is not None
        try:
            while True:
                parts = await self._socket.recv_multipart(copy=False)
                self._liveness.touch("server")
                if len(parts) == 1 and parts[0].bytes == HEARTBEAT:
                    continue
                nbytes = frames_nbytes(parts)
                if self._download is not None:
                    self._throttling = True
                    try:
                        await self._download.wait_consume(tcp_wire_bytes(nbytes))
                    finally:
                        self._throttling = False
                    self._liveness.touch("server")
                self._counters.messages_in += 1
                self._counters.bytes_in += nbytes
                await self._inbox.put([p.buffer for p in parts])
        except zmq.ZMQError as exc:
            self._lose(ConnectionLost(f"socket failed: {exc}"))

    async def _beat(self) -> None:
        assert self._socket is not None
        with contextlib.suppress(zmq.ZMQError):
            while True:
                await self._socket.send(HEARTBEAT)
                await asyncio.sleep(self._heartbeat_interval)

    async def send(self, frames: Sequence[Frame]) -> None:
        if self._socket is None:
            raise TransportError("client transport is not connected")
        if self._lost is not None:
            raise self._lost
        nbytes = frames_nbytes(frames)
        if self._upload is not None:
            await self._upload.wait_consume(tcp_wire_bytes(nbytes))
        self._counters.messages_out += 1
        self._counters.bytes_out += nbytes
        try:
            await self._socket.send_multipart(list(frames), copy=False)
        except zmq.ZMQError as exc:
            raise TransportError(f"send failed: {exc}") from exc

    async def recv(self) -> list[Frame]:
        if self._lost is not None and self._inbox.empty():
            raise self._lost
        item = await self._inbox.get()
        if isinstance(item, ConnectionLost):
            raise item
        return item

    def statistics(self) -> TransportStatistics:
        c = self._counters
        return TransportStatistics(
            peers=1 if self._lost is None and self._socket is not None else 0,
            messages_in=c.messages_in,
            messages_out=c.messages_out,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            queued_events=self._inbox.qsize(),
        )

    async def close(self) -> None:
        self._lose(ConnectionLost("transport closed"))
        self._liveness.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
                await task
        self._tasks = []
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._ctx.term()
