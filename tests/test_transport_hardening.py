"""Attacks on the transport with real ZeroMQ sockets (issue 14): oversized multipart messages are
read frame by frame, discarded and reported while the transport keeps serving."""

from __future__ import annotations

import asyncio

import pytest
import zmq
import zmq.asyncio

from clipfl.wire import Limits
from transports.base import MessageLimits, PeerJoined, Received, Rejected, ServerEvent, ServerTransport
from transports.memory import MemoryHub
from transports.zmq import ZmqClientTransport, ZmqServerTransport

FAST = {"heartbeat_interval": 0.05, "heartbeat_timeout": 2.0}
SMALL = MessageLimits(max_frames=8, max_frame_bytes=1 << 20, max_total_bytes=4 << 20)
MIB = b"\x07" * (1 << 20)


def test_transport_defaults_equal_the_codec_limits() -> None:
    """Transports know no codec, so their defaults are copies: this keeps the copies honest."""
    codec, transport = Limits(), MessageLimits()
    assert transport.max_frames == codec.max_frames
    assert transport.max_total_bytes == codec.max_total_bytes
    assert transport.max_frame_bytes == max(codec.max_tensor_bytes, codec.max_envelope_bytes)


async def _events_until_received(server: ServerTransport) -> list[ServerEvent]:
    events: list[ServerEvent] = []
    while not events or not isinstance(events[-1], Received):
        events.append(await server.recv())
    return events


async def test_a_message_with_too_many_frames_or_bytes_is_rejected_and_the_peer_still_heard() -> None:
    server = ZmqServerTransport(**FAST, limits=SMALL)
    ctx = zmq.asyncio.Context()
    attacker = ctx.socket(zmq.DEALER)
    attacker.setsockopt(zmq.LINGER, 0)
    try:
        async with server, asyncio.timeout(20):
            attacker.connect(await server.bind("tcp://127.0.0.1:0"))
            await attacker.send_multipart([b"x"] * 10_000)  # 10,000 frames against a limit of 8
            await attacker.send_multipart([MIB] * 6)  # 6 MiB against 4 MiB, each frame within MAXMSGSIZE
            await attacker.send_multipart([b"hello", b"world"])
            events = await _events_until_received(server)
            rejected = [e for e in events if isinstance(e, Rejected)]
            peer = events[0].peer
            assert isinstance(events[0], PeerJoined)
            assert rejected == [
                Rejected(peer, "more than 8 frames", 10_000, 10_000),
                Rejected(peer, f"more than {4 << 20} bytes", 6, 6 << 20),
            ]
            last = events[-1]
            assert isinstance(last, Received) and last.peer == peer
            assert [bytes(f) for f in last.frames] == [b"hello", b"world"]
            stats = server.statistics()
            assert (stats.rejected_messages, stats.rejected_bytes) == (2, 10_000 + (6 << 20))
            assert (stats.messages_in, stats.bytes_in) == (1, 10)
            # The server goes on answering that peer, and others.
            await server.send(peer, [b"still here"])
            assert await attacker.recv_multipart() == [b"still here"]
    finally:
        attacker.close(linger=0)
        ctx.term()


async def test_a_frame_over_the_frame_limit_costs_the_sender_its_connection_not_the_server() -> None:
    """ZeroMQ's MAXMSGSIZE drops the connection of a peer whose frame is too long, while reading it."""
    server = ZmqServerTransport(**FAST, limits=SMALL)
    async with server, asyncio.timeout(20):
        address = await server.bind("tcp://127.0.0.1:0")
        async with ZmqClientTransport(**FAST) as big, ZmqClientTransport(**FAST) as honest:
            await big.connect(address)
            await honest.connect(address)
            await big.send([MIB + b"!"])
            await honest.send([b"hi"])
            received = [e for e in await _events_until_received(server) if isinstance(e, Received)]
            assert [bytes(f) for f in received[0].frames] == [b"hi"]
        assert server.statistics().messages_in == 1


async def test_the_client_discards_an_oversized_message_from_the_server_and_reads_on() -> None:
    server = ZmqServerTransport(**FAST)
    async with server, ZmqClientTransport(**FAST, limits=SMALL) as client, asyncio.timeout(20):
        await client.connect(await server.bind("tcp://127.0.0.1:0"))
        await client.send([b"hello"])
        peer = (await _events_until_received(server))[-1].peer
        await server.send(peer, [b"f"] * 9)
        await server.send(peer, [MIB] * 5)
        await server.send(peer, [b"fine"])
        assert [bytes(f) for f in await client.recv()] == [b"fine"]
        stats = client.statistics()
        assert (stats.rejected_messages, stats.rejected_bytes, stats.messages_in) == (2, 9 + (5 << 20), 1)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"x"] * 9, "more than 8 frames"),
        ([MIB] * 5, "more than 4194304 bytes"),
        ([MIB + b"!"], "a frame of more"),
    ],
)
async def test_the_memory_twin_rejects_as_zeromq_does(frames: list[bytes], reason: str) -> None:
    hub = MemoryHub()
    server = hub.server(limits=SMALL)
    client = hub.client()
    await client.connect(await server.bind("mem://s"))
    await client.send(frames)
    await client.send([b"ok"])
    assert isinstance(await server.recv(), PeerJoined)
    rejected = await server.recv()
    assert isinstance(rejected, Rejected) and rejected.reason.startswith(reason)
    assert (rejected.frames, rejected.nbytes) == (len(frames), sum(map(len, frames)))
    assert isinstance(await server.recv(), Received)
    assert server.statistics().rejected_messages == 1


# ----------------------------------------------------------------------- routing ids, no handover


async def _received(server: ServerTransport, count: int) -> list[Received]:
    got: list[Received] = []
    while len(got) < count:
        event = await server.recv()
        if isinstance(event, Received):
            got.append(event)
    return got


async def test_client_routing_ids_are_random_and_new_for_each_connection() -> None:
    server = ZmqServerTransport(**FAST)
    async with server, asyncio.timeout(20):
        address = await server.bind("tcp://127.0.0.1:0")
        ids = []
        for _ in range(3):
            async with ZmqClientTransport(**FAST) as client:
                await client.connect(address)
                await client.send([b"hi"])
                (event,) = await _received(server, 1)
                assert event.peer == client.routing_id
                ids.append(event.peer)
        assert len(set(ids)) == 3 and all(len(i) == 16 and i[0] != 0 for i in ids)


async def test_an_impostor_with_a_clients_routing_id_cannot_take_over_its_connection() -> None:
    """Issue 14, failure 2: with ROUTER_HANDOVER on, a DEALER that set a registered client's routing
    id took over its connection and its poisoned update was aggregated."""
    server = ZmqServerTransport(**FAST)
    ctx = zmq.asyncio.Context()
    impostor = ctx.socket(zmq.DEALER)
    impostor.setsockopt(zmq.LINGER, 0)
    try:
        async with server, ZmqClientTransport(**FAST) as honest, asyncio.timeout(20):
            address = await server.bind("tcp://127.0.0.1:0")
            await honest.connect(address)
            await honest.send([b"honest", b"1"])
            (first,) = await _received(server, 1)
            victim = first.peer
            assert victim == honest.routing_id

            impostor.setsockopt(zmq.ROUTING_ID, victim)
            impostor.connect(address)
            await asyncio.sleep(0.3)  # let the handshake finish: with handover it would now own the id
            for i in range(5):
                await impostor.send_multipart([b"evil", str(i).encode()])
            await asyncio.sleep(0.3)
            await honest.send([b"honest", b"2"])
            (second,) = await _received(server, 1)  # the impostor's five messages never arrived
            assert second.peer == victim and [bytes(f) for f in second.frames] == [b"honest", b"2"]
            assert server.statistics().messages_in == 2

            await server.send(victim, [b"for the honest client"])
            assert [bytes(f) for f in await honest.recv()] == [b"for the honest client"]
            assert await impostor.poll(300) == 0  # the impostor hears nothing meant for the victim
    finally:
        impostor.close(linger=0)
        ctx.term()
