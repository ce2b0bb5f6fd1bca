"""Transports over real ZeroMQ sockets on loopback, and the in-memory twin with the same interface."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from transports.base import ClientTransport, PeerJoined, PeerLeft, Received, ServerTransport
from transports.errors import ConnectionLost
from transports.memory import MemoryHub
from transports.zmq import ZmqClientTransport, ZmqServerTransport

FAST = {"heartbeat_interval": 0.05, "heartbeat_timeout": 0.5}


def _pair(kind: str) -> tuple[ServerTransport, callable, str]:
    if kind == "zmq":
        return ZmqServerTransport(**FAST), lambda: ZmqClientTransport(**FAST), "tcp://127.0.0.1:0"
    hub = MemoryHub()
    return hub.server(), hub.client, "mem://server"


async def _next_received(server: ServerTransport) -> Received:
    while True:
        event = await server.recv()
        if isinstance(event, Received):
            return event


@pytest.mark.parametrize("kind", ["zmq", "memory"])
async def test_many_clients_exchange_messages(kind: str) -> None:
    server, make_client, address = _pair(kind)
    async with server:
        address = await server.bind(address)
        clients: list[ClientTransport] = [make_client() for _ in range(20)]
        async with asyncio.timeout(20):
            for i, client in enumerate(clients):
                await client.connect(address)
                await client.send([b"hello", str(i).encode()])
            peers: dict[bytes, int] = {}
            joined: set[bytes] = set()
            while len(peers) < len(clients):
                event = await server.recv()
                if isinstance(event, PeerJoined):
                    joined.add(event.peer)
                elif isinstance(event, Received):
                    assert bytes(event.frames[0]) == b"hello"
                    peers[event.peer] = int(bytes(event.frames[1]))
            assert joined == set(peers)
            for peer, i in peers.items():
                await server.send(peer, [f"reply {i}".encode()])
            for i, client in enumerate(clients):
                assert [bytes(f) for f in await client.recv()] == [f"reply {i}".encode()]
        stats = server.statistics()
        assert stats.messages_in == 20 and stats.messages_out == 20
        for client in clients:
            await client.close()


@pytest.mark.parametrize("kind", ["zmq", "memory"])
async def test_large_frames_arrive_intact(kind: str) -> None:
    server, make_client, address = _pair(kind)
    payload = np.random.default_rng(0).integers(0, 2**32, size=2_000_000, dtype=np.uint32)
    async with server, make_client() as client:
        await client.connect(await server.bind(address))
        async with asyncio.timeout(20):
            await client.send([b"big", memoryview(payload).cast("B")])
            event = await _next_received(server)
            got = np.frombuffer(event.frames[1], dtype=np.uint32)
            np.testing.assert_array_equal(got, payload)
            await server.send(event.peer, [memoryview(payload).cast("B")])
            back = await client.recv()
            np.testing.assert_array_equal(np.frombuffer(back[0], dtype=np.uint32), payload)


async def test_server_learns_of_a_vanished_client_within_the_heartbeat_timeout() -> None:
    server = ZmqServerTransport(**FAST)
    async with server:
        address = await server.bind("tcp://127.0.0.1:0")
        stays, leaves = ZmqClientTransport(**FAST), ZmqClientTransport(**FAST)
        await stays.connect(address)
        await leaves.connect(address)
        await stays.send([b"a"])
        await leaves.send([b"b"])
        async with asyncio.timeout(10):
            by_payload: dict[bytes, bytes] = {}
            while len(by_payload) < 2:
                event = await _next_received(server)
                by_payload[bytes(event.frames[0])] = event.peer
            await leaves.close()  # vanishes without a word
            event = await server.recv()
            while not isinstance(event, PeerLeft):
                event = await server.recv()
        assert event.peer == by_payload[b"b"]
        assert "silent" in event.reason
        assert server.statistics().peers == 1
        await stays.close()


async def test_client_learns_that_the_server_went_silent() -> None:
    server = ZmqServerTransport(**FAST)
    address = await server.bind("tcp://127.0.0.1:0")
    async with ZmqClientTransport(**FAST) as client:
        await client.connect(address)
        await client.send([b"x"])
        await _next_received(server)
        await server.close()
        with pytest.raises(ConnectionLost, match="silent"):
            async with asyncio.timeout(10):
                await client.recv()


async def test_memory_client_close_is_seen_at_once() -> None:
    hub = MemoryHub()
    async with hub.server() as server:
        client = hub.client()
        await client.connect(await server.bind("mem://x"))
        await client.send([b"x"])
        await client.close()
        events = [await server.recv() for _ in range(3)]
        assert [type(e) for e in events] == [PeerJoined, Received, PeerLeft]
