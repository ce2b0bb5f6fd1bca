"""ZeroMQ transport: ROUTER on the server, DEALER on each client, driven by ``zmq.asyncio``.

The only module that imports zmq (with ``transports.curve``, its CurveZMQ part); zmq errors become
``TransportError`` (``transports.errors``) here.

- Large frames are sent with ``copy=False`` (pyzmq copies frames under its ``copy_threshold``
  itself, where copying is cheaper than tracking).
- Heartbeats: each client sends ``HEARTBEAT`` every ``heartbeat_interval`` seconds and the server
  answers each one, so both sides learn of the other's silence within ``heartbeat_timeout``.
  A heartbeat is one frame starting with a zero byte, which no msgpack map can start with.
- Bounds: ZMQ high-water marks on the sockets, ``MAXMSGSIZE`` (``MessageLimits.max_frame_bytes``)
  so that a peer cannot make ZeroMQ allocate an unbounded frame, and a bounded number of received
  messages waiting for the application (the reader stops reading when it is reached, so back-pressure
  reaches the sender). Messages are read frame by frame and their frame count and running size are
  checked against ``MessageLimits`` as the frames are read: an oversized message is discarded frame
  by frame, never held whole in Python, and reported (``Rejected`` on the server, a counter on both).
  What this cannot bound: ZeroMQ delivers a multipart message atomically, so libzmq has buffered all
  of it before the first frame can be read, and no ZeroMQ option caps the number of frames. A peer
  that completes the handshake can make libzmq hold one long multipart message per connection
  (measured: a 200-frame, 200 MiB message is resident before the first ``recv``, and freed as the
  frames are read and dropped). CurveZMQ with an allow-list keeps strangers from getting that far.
- Routing ids: each client connection takes a fresh random 16-byte routing id (``ROUTING_ID`` from
  ``secrets``), so no one can predict a client's id, and the ROUTER runs without ``ROUTER_HANDOVER``,
  so a second connection that presents an id already connected is refused by ZeroMQ: its messages
  never reach the server, under that id or any other, and the original connection keeps its id. A
  client that reconnects gets a new transport and so a new id, and registers again. (Without CurveZMQ
  anyone who can read the traffic learns the id; the session token proves the client, not the id.)
- CurveZMQ (``curve=``, see ``transports.curve``): encrypted connections, and on the server a ZAP
  handler that admits only allow-listed client keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

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
from transports.errors import ConnectionLost, TransportConfigError, TransportError
from transports.liveness import Liveness
from transports.ratelimit import TokenBucket, tcp_wire_bytes

if TYPE_CHECKING:
    from transports.curve import CurveClient, CurveGate, CurveServer

__all__ = ["HEARTBEAT", "ZmqClientTransport", "ZmqServerTransport", "random_routing_id"]

log = logging.getLogger(__name__)

# One frame starting with a zero byte, which no msgpack map (the application's messages) starts with.
HEARTBEAT = b"\x00heartbeat"


def random_routing_id() -> bytes:
    """16 random bytes that do not start with a zero byte (ZeroMQ reserves those for its own ids)."""
    return bytes([1 + secrets.randbelow(255)]) + secrets.token_bytes(15)


class _Counters:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "messages_in",
        "messages_out",
        "rejected_bytes",
        "rejected_messages",
    )

    def __init__(self) -> None:
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self.rejected_messages = self.rejected_bytes = 0

    def statistics(self, peers: int, queued: int) -> TransportStatistics:
        return TransportStatistics(
            peers=peers,
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            queued_events=queued,
            rejected_messages=self.rejected_messages,
            rejected_bytes=self.rejected_bytes,
        )


class _Incoming:
    """One multipart message as read frame by frame: the frames kept (none once refused), how many
    frames and bytes the peer sent, and why it was refused (None when it fits the limits)."""

    __slots__ = ("frames", "nbytes", "reason", "total_frames")

    def __init__(self) -> None:
        self.frames: list[zmq.Frame] = []
        self.total_frames = self.nbytes = 0
        self.reason: str | None = None

    def add(self, frame: zmq.Frame, limits: MessageLimits) -> None:
        self.total_frames += 1
        self.nbytes += len(frame)
        self.reason = limits.refusal(self.total_frames, self.nbytes)
        if self.reason is None:
            self.frames.append(frame)
        else:
            self.frames.clear()


_YIELD_EVERY = 4096


def _user_id(frame: zmq.Frame) -> str | None:
    """The ZAP User-Id of the connection ``frame`` came from: under CurveZMQ, the client's Z85 key."""
    try:
        value = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return value if isinstance(value, str) and value else None


async def _recv_bounded(
    sock: zmq.asyncio.Socket, sync: zmq.Socket[Any], limits: MessageLimits, *, more: bool | None = None
) -> _Incoming:
    """Read a multipart message, checking the frame count and the running size as each frame is
    read; once over a limit, the remaining frames are read and dropped one by one, so Python never
    holds more than the limits allow.

    ``more=None``: nothing of the message was read yet, wait for it. True or False: a frame of it was
    read already (the ROUTER's routing id), and more frames follow or not. ``sync`` is a plain
    shadow of ``sock``: the rest of a multipart message is already here (ZeroMQ delivers it whole),
    so a non-blocking read returns at once, without an event-loop trip and a Future per frame
    (measured: 3.5 us a frame instead of 34); a long message lets other tasks run every
    ``_YIELD_EVERY`` frames.
    """
    incoming = _Incoming()
    if more is None:
        frame = await sock.recv(copy=False)
        incoming.add(frame, limits)
        more = frame.more
    while more:
        if incoming.total_frames % _YIELD_EVERY == _YIELD_EVERY - 1:
            await asyncio.sleep(0)
        try:
            frame = sync.recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:  # not expected (atomic delivery); wait rather than fail
            frame = await sock.recv(copy=False)
        more = frame.more
        if incoming.reason is None:
            incoming.add(frame, limits)
        else:  # refused: count the rest and let each frame go at once
            incoming.total_frames += 1
            incoming.nbytes += len(frame)
    return incoming


class ZmqServerTransport(ServerTransport):
    def __init__(
        self,
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 10.0,
        max_queued: int = 256,
        high_water_mark: int = 1000,
        limits: MessageLimits | None = None,
        socket_options: dict[int, Any] | None = None,
        curve: CurveServer | None = None,
    ) -> None:
        self._heartbeat_timeout = heartbeat_timeout
        self._curve = curve  # CurveZMQ: encrypt, and admit only allow-listed client keys
        self._gate: CurveGate | None = None
        self._high_water_mark = high_water_mark
        self._limits = limits or MessageLimits()
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
        sock.setsockopt(zmq.MAXMSGSIZE, self._limits.max_frame_bytes)
        # Off (ZeroMQ's default, set to say so): with handover, anyone who presents a connected
        # client's routing id takes over its connection (issue 14, failure 2).
        sock.setsockopt(zmq.ROUTER_HANDOVER, 0)
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
        sync: zmq.Socket[Any] = zmq.Socket.shadow(sock.underlying)  # shares the socket, closes nothing
        try:
            while True:
                await self._space.acquire()
                released = False
                try:
                    head = await sock.recv(copy=False)  # the ROUTER's routing-id frame
                    peer = head.bytes
                    incoming = await _recv_bounded(sock, sync, self._limits, more=head.more)
                    body = incoming.frames
                    if self._liveness.touch(peer):
                        self._events.put_nowait(PeerJoined(peer))
                    if incoming.reason is not None:
                        self._counters.rejected_messages += 1
                        self._counters.rejected_bytes += incoming.nbytes
                        self._events.put_nowait(
                            Rejected(peer, incoming.reason, incoming.total_frames, incoming.nbytes)
                        )
                        released = True  # as for Received: recv() releases the slot
                        continue
                    if len(body) == 1 and body[0].bytes == HEARTBEAT:
                        await self._send_raw([peer, HEARTBEAT])
                        continue
                    if not body:  # a routing id alone: ZeroMQ does not deliver one, but never trust it
                        continue
                    self._counters.messages_in += 1
                    self._counters.bytes_in += incoming.nbytes
                    credential = _user_id(body[0]) if self._curve is not None else None
                    self._events.put_nowait(Received(peer, [f.buffer for f in body], credential))
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
        if isinstance(event, Received | Rejected):
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
        return self._counters.statistics(len(self._liveness), self._events.qsize())

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
        limits: MessageLimits | None = None,
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
        self._limits = limits or MessageLimits()
        self._identity = identity  # a fixed routing id, for tests; None: a random one per connect()
        self.routing_id: bytes | None = None
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
        sock.setsockopt(zmq.MAXMSGSIZE, self._limits.max_frame_bytes)
        self.routing_id = self._identity if self._identity is not None else random_routing_id()
        sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
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
        sync: zmq.Socket[Any] = zmq.Socket.shadow(self._socket.underlying)  # shares the socket
        try:
            while True:
                incoming = await _recv_bounded(self._socket, sync, self._limits)
                parts, nbytes = incoming.frames, incoming.nbytes
                self._liveness.touch("server")
                if incoming.reason is not None:
                    self._counters.rejected_messages += 1
                    self._counters.rejected_bytes += nbytes
                    if self._counters.rejected_messages & (self._counters.rejected_messages - 1) == 0:
                        log.warning(  # the 1st, 2nd, 4th, 8th... only: a server cannot flood this log
                            "discarded a message from the server of %d frames and %d bytes: %s (%d so far)",
                            incoming.total_frames,
                            nbytes,
                            incoming.reason,
                            self._counters.rejected_messages,
                        )
                    continue
                if len(parts) == 1 and parts[0].bytes == HEARTBEAT:
                    continue
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
        peers = 1 if self._lost is None and self._socket is not None else 0
        return self._counters.statistics(peers, self._inbox.qsize())

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
